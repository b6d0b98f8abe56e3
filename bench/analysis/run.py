"""Spectral analyses of one set of weights, and their rendering (``bench analyze``).

Per analysed model (methods.md section 6): the Fourier heat map (6.3), the spectrum of PGD
perturbations with its radial profile and low-frequency energy fraction (6.1, 6.4), the
clean-vs-adversarial amplitude difference map, and clean / adversarial accuracy after low- and
high-pass filtering with square and circular masks (6.2; adversarial examples crafted on the
unfiltered model unless ``filter_in_loop``). Results are cached per model like evaluations; the
rendering writes PNG figures, CSV / Markdown tables and an index into ``<results>/<suite>/analysis/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bench.analysis import fourier as F
from bench.attacks.pgd import pgd, step_size
from bench.core.files import atomic_write_text
from bench.core.modes import frozen_eval
from bench.device.precision import attack_model, autocast
from bench.evaluation.evaluate import AttackFn
from bench.suite.specs import AnalysisSpec
from bench.types import ThreatModel


def default_bandwidths(h: int) -> tuple[int, ...]:
    return tuple(range(h, h // 4 - 1, -4))


def default_radii(h: int) -> tuple[int, ...]:
    return tuple(range(2, h // 2 + 1, 2))


def analyze(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    spec: AnalysisSpec,
    seed: int,
    attacks: dict[str, AttackFn] | None = None,
    precision: str = "fp32",
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All analyses of ``model`` on [0,1] inputs ``x``; returns (arrays, metrics).

    ``attacks`` (column label -> attack) adds a perturbation spectrum per suite attack; the
    analysis's own PGD (``spec.attack_*``) is always analysed and drives the filtered accuracy.
    The attacks run in ``precision`` (the path ``eval.precision`` resolved to); the heat map and the filtered accuracies
    are fp32 forward passes.
    """
    h, w = x.shape[-2:]
    eps = threat.eps_float
    alpha = step_size(spec.attack_alpha, eps)
    torch.manual_seed(seed)

    def attack(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return pgd(m, xb, yb, eps, alpha, spec.attack_steps, norm=threat.norm)

    label = f"PGD-{spec.attack_steps}"
    with frozen_eval(model), autocast(x.device, precision):
        target = attack_model(model, precision)
        adversarial = {label: attack(target, x, y)}
        for name, fn in (attacks or {}).items():
            if name not in adversarial:  # the suite's column of the same label is the analysis's own PGD: not re-run
                adversarial[name] = fn(target, x, y).detach()
    arrays: dict[str, np.ndarray] = {}
    metrics: dict[str, Any] = {"n_images": len(y), "energy_radius": spec.energy_radius, "attack": label, "energy": {}}
    for name, x_adv in adversarial.items():
        spectrum = F.perturbation_spectrum(x_adv - x)
        arrays[f"perturbation_spectrum__{name}"] = spectrum.cpu().numpy()
        arrays[f"radial_profile__{name}"] = F.radial_profile(spectrum).cpu().numpy()
        metrics["energy"][name] = F.energy_fraction(spectrum, spec.energy_radius)
    amp_clean, amp_adv = F.centred_amplitude(x), F.centred_amplitude(adversarial[label])
    arrays["amplitude_clean"] = amp_clean.mean(0).cpu().numpy()
    arrays["amplitude_adv"] = amp_adv.mean(0).cpu().numpy()
    arrays["amplitude_diff"] = (amp_adv - amp_clean).abs().mean(0).cpu().numpy()
    if spec.heatmap:
        v = spec.v if spec.v is not None else 4.0 * h / 32
        g = torch.Generator(device=x.device).manual_seed(seed)
        n = min(spec.heatmap_images, len(y))
        heat = F.fourier_heatmap(model, x[:n], y[:n], v, generator=g)
        arrays["heatmap"] = heat.cpu().numpy()
        metrics.update({"heatmap_v": v, "heatmap_images": n, "heatmap_weighted_radius": F.weighted_radius(heat)})
    masks = {f"b={b}": F.square_mask(h, w, b, device=x.device) for b in spec.bandwidths or default_bandwidths(h)}
    masks.update({f"r={r}": F.circle_mask(h, w, r, device=x.device) for r in spec.radii or default_radii(h)})
    table = []
    for keep in ("low", "high"):
        accs = F.filtered_accuracy(
            model, x, y, masks, attack=attack, in_loop=spec.filter_in_loop, keep=keep, x_adv=adversarial[label]
        )  # the spectra's adversarial examples, shared (crafted against the unfiltered model, as the protocol says)
        for name, (clean, adv) in accs.items():
            table.append({"pass": keep, "mask": name, "clean_acc": clean, "adv_acc": adv})
    metrics["filtered"] = table
    return arrays, metrics


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


NORMS = {"Linf": "L∞", "L2": "L2"}
SPECTRUM = "mean |FFT2(x_adv − x)|"
AMPLITUDE_CHANGE = "|log(1+|FFT2(x_adv)|) − log(1+|FFT2(x)|)|"


def _figure_line(path: Path, caption: str) -> str:
    """The index entry of a figure: ``- [x.png](x.png) ([PDF](x.pdf)): caption`` (the HTML page embeds it)."""
    pdf = path.with_suffix(".pdf").name
    return f"- [{path.name}]({path.name}) ([PDF]({pdf})): {caption}"


def _number(value: Any, fmt: str, undefined: str = "—") -> str:
    return undefined if value is None or not np.isfinite(value) else format(value, fmt)


def _finite(obj: Any) -> Any:
    """NaN and infinities -> None, so that ``analysis.json`` is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


NO_ERROR = "undefined: no error at any frequency"
MAPS = ("Maps: frequency in cycles/image, zero frequency (DC) at the centre (0, 0); each figure shows every analysed model "
        "side by side on one colour scale, as PNG and as PDF.")  # fmt: skip
RADIUS = "error-weighted radius = mean distance from DC weighted by the heat map's error rate."


def render(results: list[dict[str, Any]], out: Path, attack_label: str, threat: ThreatModel) -> Path:
    """Figures (PNG + PDF), tables and ``README.md`` for analysed models: ``results`` has display, seed, arrays, metrics.

    One figure per quantity with every analysed model side by side on one colour scale:
    ``heatmap``, ``perturbation_spectrum_<attack>`` (one per analysed attack), ``amplitude_diff``
    and ``radial_profiles`` (one panel per attack).
    """
    out.mkdir(parents=True, exist_ok=True)
    several_seeds = len({r["seed"] for r in results}) > 1
    named = {(f"{r['display']} (seed {r['seed']})" if several_seeds else r["display"]): r for r in results}
    arrays = {name: r["arrays"] for name, r in named.items()}
    metrics = {name: r["metrics"] for name, r in named.items()}
    first = next(iter(metrics.values()), {})
    radius = first.get("energy_radius")
    attacks = list(dict.fromkeys(a for m in metrics.values() for a in m["energy"]))
    figures = []

    heat = {name: a["heatmap"] for name, a in arrays.items() if "heatmap" in a}
    if heat:
        m = next(metrics[name] for name in heat)
        lo, hi = F.colour_range(heat.values())
        hi = max(hi, lo + 1 / m["heatmap_images"])  # at least one image's worth: a map without errors stays readable
        notes = {n: f"mean {np.mean(h):.3f}, max {np.max(h):.3f}" if np.max(h) > 0 else "no error at any frequency" for n, h in heat.items()}
        path = F.plot_maps(
            heat, out / "heatmap.png", f"Fourier heat map: error rate under Fourier-basis noise (L2 norm {m['heatmap_v']:.2f}, "
            f"{m['heatmap_images']} images)", "error rate", vmin=lo, vmax=hi, notes=notes,
        )  # fmt: skip
        figures.append(_figure_line(path, f"Fourier heat map: error rate when the Fourier basis image at each frequency, of L2 norm "
                                    f"{m['heatmap_v']:.2f}, is added with random signs to {m['heatmap_images']} test images; colour range "
                                    f"{lo:.3f}–{hi:.3f}, shared by the panels."))  # fmt: skip
    for atk in attacks:
        have = {n: a[f"perturbation_spectrum__{atk}"] for n, a in arrays.items() if atk in metrics[n]["energy"]}
        notes = {n: f"energy below r={radius}: {metrics[n]['energy'][atk]:.3f}" for n in have}
        path = F.plot_maps(have, out / f"perturbation_spectrum_{_slug(atk)}.png", f"{atk} perturbation spectrum: {SPECTRUM} over images and channels",
                           f"{SPECTRUM} (log scale)", log=True, notes=notes)  # fmt: skip
        figures.append(_figure_line(path, f"{atk} perturbation spectrum, {SPECTRUM} (mean over images and channels, log colour scale "
                                    f"shared by the panels); energy fraction of the squared spectrum below radius {radius}."))  # fmt: skip
    change = {n: a["amplitude_diff"] for n, a in arrays.items()}
    if change:
        path = F.plot_maps(change, out / "amplitude_diff.png", f"Amplitude change under {attack_label}: {AMPLITUDE_CHANGE}, mean over images",
                           AMPLITUDE_CHANGE, notes={n: f"mean {np.mean(c):.4f}" for n, c in change.items()})  # fmt: skip
        figures.append(_figure_line(path, f"clean-vs-adversarial ({attack_label}) amplitude change: {AMPLITUDE_CHANGE} per frequency "
                                    "(log-amplitude averaged over channels, absolute change averaged over images)."))  # fmt: skip
    profiles = {
        atk: {n: p / max(float(np.nansum(p)), 1e-12) for n, a in arrays.items() if (p := a.get(f"radial_profile__{atk}")) is not None}
        for atk in attacks
    }
    if profiles:
        path = F.plot_profiles(profiles, out / "radial_profiles.png", f"Radial profile of the perturbation spectrum ({SPECTRUM})",
                               "share of the profile's sum")  # fmt: skip
        figures.append(_figure_line(path, f"radial profile of each perturbation spectrum: {SPECTRUM} averaged over the "
                                    "frequencies at each integer radius from DC, normalised to sum 1; one panel per attack."))  # fmt: skip

    summary, filtered = [], []
    for name, m in metrics.items():
        h = arrays[name].get("heatmap")
        summary.append({
            "model": name,
            **{f"energy_below_r{radius} {k}": round(v, 4) for k, v in m["energy"].items()},
            "heatmap_weighted_radius": m.get("heatmap_weighted_radius"),
            "heatmap_mean_error": None if h is None else round(float(np.mean(h)), 4),
            "heatmap_max_error": None if h is None else round(float(np.max(h)), 4),
            "amplitude_diff_mean": round(float(np.mean(arrays[name]["amplitude_diff"])), 4),
        })  # fmt: skip
        filtered.extend({"model": name, **row} for row in m["filtered"])
    table = [
        {
            "model": s["model"],
            "heat map: mean error": _number(s["heatmap_mean_error"], ".3f"),
            "max error": _number(s["heatmap_max_error"], ".3f"),
            "error-weighted radius": NO_ERROR if s["heatmap_max_error"] == 0 else _number(s["heatmap_weighted_radius"], ".2f"),
            **{f"energy below r={radius}: {atk}": _number(s.get(f"energy_below_r{radius} {atk}"), ".3f") for atk in attacks},
            "amplitude change (mean)": _number(s["amplitude_diff_mean"], ".4f"),
        }
        for s in summary
    ]
    df = pd.DataFrame(filtered)
    atomic_write_text(out / "filtered_accuracy.csv", df.to_csv(index=False))
    atomic_write_text(out / "summary.csv", pd.DataFrame(summary).to_csv(index=False))
    index = [
        "# Spectral analysis",
        "",
        (f"Threat {NORMS.get(threat.norm, threat.norm)}, ε = {threat.eps_text}; perturbations from {attack_label} against each "
         f"model (methods.md §6), and from each attack of the suite for its spectrum. {MAPS}"),
        "",
        "## Figures",
        "",
        *figures,
        "",
        "## Summary",
        "",
        pd.DataFrame(table).to_markdown(index=False, disable_numparse=True, colalign=("left",) + ("right",) * (len(table[0]) - 1)),
        "",
        f"Energy below r = share of the squared perturbation spectrum at radius < {radius} cycles/image; {RADIUS}",
        "",
        "## Filtered accuracy (%)",
        "",
        _filtered_markdown(df, attack_label),
        "",
    ]
    atomic_write_text(out / "README.md", "\n".join(index))
    records = [{"model": r["display"], "seed": r["seed"], **r["metrics"]} for r in results]
    atomic_write_text(out / "analysis.json", json.dumps(_finite(records), indent=1) + "\n")
    return out


def _filtered_markdown(df: pd.DataFrame, attack_label: str) -> str:
    """FR paper Table 1 layout: one row per (model, input), one column per mask; low and high pass."""
    parts = []
    for keep in ("low", "high"):
        sub = df[df["pass"] == keep]
        rows = []
        for model in dict.fromkeys(sub["model"]):
            m = sub[sub["model"] == model]
            rows.append({"model": model, "input": "Clean", **{k: f"{100 * v:.2f}" for k, v in zip(m["mask"], m["clean_acc"])}})
            rows.append({"model": model, "input": attack_label, **{k: f"{100 * v:.2f}" for k, v in zip(m["mask"], m["adv_acc"])}})
        parts.append(f"**{keep}-pass** (b = square side, r = circle radius on the centred spectrum)\n\n{pd.DataFrame(rows).to_markdown(index=False)}")
    return "\n\n".join(parts)
