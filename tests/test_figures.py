"""Paper-ready figures: frequency axes, one colour scale per figure, titles that name what is plotted, PNG + PDF."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bench.analysis import fourier as F
from bench.analysis.run import AMPLITUDE_CHANGE, NO_ERROR, render
from bench.core import plotting as figures
from bench.types import ThreatModel


@pytest.mark.parametrize(("n", "ticks"), [(28, [-14, -7, 0, 7]), (32, [-16, -8, 0, 8]), (12, [-6, -3, 0, 3]), (5, [-2, -1, 0, 1, 2])])
def test_frequency_ticks_are_centred_on_dc(n: int, ticks: list[int]) -> None:
    assert figures.frequency_ticks(n) == ticks


def test_maps_share_one_colour_scale_from_the_data_and_put_dc_at_the_origin() -> None:
    a = np.zeros((28, 28))
    a[14, 14] = 0.3  # the DC bin of a centred 28 x 28 spectrum
    b = np.full((28, 28), 0.1)
    fig = F.map_figure({"a": a, "b": b}, "title", "error rate", notes={"a": "mean 0.0"})
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    assert {(im.norm.vmin, im.norm.vmax) for im in images} == {(0.0, 0.3)}  # the data's range, shared, not 0-1
    left, right, bottom, top = images[0].get_extent()
    assert (left, right, bottom, top) == (-14.5, 13.5, -14.5, 13.5)  # bin (14, 14) is drawn at (0, 0)
    assert images[0].origin == "lower"
    panel = images[0].axes
    assert list(panel.get_xticks()) == [-14, -7, 0, 7] and panel.get_title() == "a\nmean 0.0"
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "error rate"]
    assert len(bars) == 1  # one colour bar for the whole figure
    assert "cycles/image" in fig.get_supxlabel() and "cycles/image" in fig.get_supylabel() and fig.get_suptitle() == "title"


def test_log_maps_use_the_positive_data_range() -> None:
    fig = F.map_figure({"x": np.array([[0.5, 2.0], [4.0, 0.0]])}, "t", "c", log=True)
    (im,) = [ax.images[0] for ax in fig.axes if ax.images]
    assert (im.norm.vmin, im.norm.vmax) == (0.5, 4.0)


def test_png_and_pdf_are_written_and_deterministic(tmp_path) -> None:
    maps = {"m": np.arange(144.0).reshape(12, 12)}
    first = F.plot_maps(maps, tmp_path / "one" / "map.png", "title", "value")
    second = F.plot_maps(maps, tmp_path / "two" / "map.png", "title", "value")
    for ext in (".png", ".pdf"):
        data = first.with_suffix(ext).read_bytes()
        assert len(data) > 1000 and data == second.with_suffix(ext).read_bytes()
    assert b"CreationDate" not in first.with_suffix(".pdf").read_bytes()


def _result(name: str, heat: np.ndarray) -> dict:
    spectrum = np.random.default_rng(0).uniform(0.5, 3.0, (12, 12))
    arrays = {
        "heatmap": heat,
        "perturbation_spectrum__PGD-2": spectrum,
        "radial_profile__PGD-2": np.linspace(1, 0.1, 9),
        "amplitude_diff": spectrum / 10,
    }
    filtered = [{"pass": p, "mask": "b=12", "clean_acc": 1.0, "adv_acc": 0.5} for p in ("low", "high")]
    weighted = F.weighted_radius(torch.tensor(heat))
    metrics = {"energy": {"PGD-2": 0.6}, "energy_radius": 4, "attack": "PGD-2", "heatmap_v": 1.5, "heatmap_images": 8,
               "heatmap_weighted_radius": weighted, "filtered": filtered}  # fmt: skip
    return {"display": name, "seed": 0, "arrays": arrays, "metrics": metrics}


def test_render_draws_every_model_in_one_figure_per_quantity_and_never_says_nan(tmp_path, monkeypatch) -> None:
    heat = np.zeros((12, 12))
    heat[6, 8] = heat[6, 4] = 0.25
    results = [_result("standard", heat), _result("pgd_at+wa", np.zeros((12, 12)))]  # a robust model: no error anywhere
    assert math.isnan(results[1]["metrics"]["heatmap_weighted_radius"])
    calls = {}
    original = F.plot_maps

    def spy(maps, path, title, cbar, **options):
        calls[path.stem] = (list(maps), title, cbar, options)
        return original(maps, path, title, cbar, **options)

    monkeypatch.setattr(F, "plot_maps", spy)
    out = render(results, tmp_path / "analysis", "PGD-2", ThreatModel("Linf", 0.1, "0.1"))
    assert set(calls) == {"heatmap", "perturbation_spectrum_PGD-2", "amplitude_diff"}
    assert all(models == ["standard", "pgd_at+wa"] for models, *_ in calls.values())
    _, _, _, heat_options = calls["heatmap"]
    assert (heat_options["vmin"], heat_options["vmax"]) == (0.0, 0.25)  # from the data, shared by both panels
    assert heat_options["notes"]["pgd_at+wa"] == "no error at any frequency"
    _, title, cbar, _ = calls["amplitude_diff"]
    assert cbar == AMPLITUDE_CHANGE and AMPLITUDE_CHANGE in title  # the title and the colour bar name the same quantity
    assert calls["perturbation_spectrum_PGD-2"][3]["log"] is True
    for name in ("heatmap", "perturbation_spectrum_PGD-2", "amplitude_diff", "radial_profiles"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.pdf").stat().st_size > 1000
    readme = (out / "README.md").read_text()
    assert "nan" not in readme.lower() and NO_ERROR in readme
    assert "[heatmap.png](heatmap.png) ([PDF](heatmap.pdf))" in readme and "colour range 0.000–0.250" in readme

    def reject(constant: str) -> None:
        raise ValueError(constant)

    analysis = json.loads((out / "analysis.json").read_text(), parse_constant=reject)  # strict JSON: no NaN
    assert analysis[1]["heatmap_weighted_radius"] is None
