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
from bench.config import AnalysisSpec
from bench.evaluate import AttackFn
from bench.modes import frozen_eval
from bench.store import atomic_write_text
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
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All analyses of ``model`` on [0,1] inputs ``x``; returns (arrays, metrics).

    ``attacks`` (column label -> attack) adds a perturbation spectrum per suite attack; the
    analysis's own PGD (``spec.attack_*``) is always analysed and drives the filtered accuracy.
    """
    h, w = x.shape[-2:]
    eps = threat.eps_float
    alpha = step_size(spec.attack_alpha, eps)
    torch.manual_seed(seed)

    def attack(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return pgd(m, xb, yb, eps, alpha, spec.attack_steps, norm=threat.norm)

    label = f"PGD-{spec.attack_steps}"
    with frozen_eval(model):
        adversarial = {label: attack(model, x, y)}
        for name, fn in (attacks or {}).items():
            if name not in adversarial:  # the suite's column of the same label is the analysis's own PGD: not re-run
                adversarial[name] = fn(model, x, y).detach()
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


def render(results: list[dict[str, Any]], out: Path, attack_label: str, threat: ThreatModel) -> Path:
    """Figures, tables and ``README.md`` for analysed models: ``results`` has display, seed, arrays, metrics."""
    out.mkdir(parents=True, exist_ok=True)
    index = [
        "# Spectral analysis",
        "",
        f"Threat L∞, ε = {threat.eps_text}; perturbations from {attack_label} against each model (methods.md §6).",
        "Low frequency at the centre of every map.",
        "",
    ]
    summary, filtered = [], []
    profiles: dict[str, dict[str, np.ndarray]] = {}  # attack -> model -> normalised radial profile
    for r in results:
        name = f"{r['display']} (seed {r['seed']})" if len({x['seed'] for x in results}) > 1 else r["display"]
        slug, a, m = _slug(name), r["arrays"], r["metrics"]
        index.append(f"## {name}\n")
        if "heatmap" in a:
            path = F.plot_map(a["heatmap"], out / f"heatmap_{slug}.png", f"Fourier heat map (error rate): {name}", 0, 1, "error rate")
            index.append(
                f"- [{path.name}]({path.name}): error under basis noise of L2 norm {m['heatmap_v']:.2f} on "
                f"{m['heatmap_images']} images; mean error {float(np.mean(a['heatmap'])):.3f}, max {float(np.max(a['heatmap'])):.3f}, "
                f"error-weighted radius {m['heatmap_weighted_radius']:.2f}"
            )
        for atk, eta in m["energy"].items():
            spectrum = a[f"perturbation_spectrum__{atk}"]
            path = F.plot_map(np.log(spectrum + 1e-8), out / f"perturbation_spectrum_{slug}_{_slug(atk)}.png", f"log |FFT(x_adv - x)|, {atk}: {name}", cbar="log amplitude")
            index.append(f"- [{path.name}]({path.name}): {atk} perturbation spectrum; energy fraction below radius {m['energy_radius']}: {eta:.3f}")
            profile = a[f"radial_profile__{atk}"]
            profiles.setdefault(atk, {})[name] = profile / max(float(np.nansum(profile)), 1e-12)
        path = F.plot_map(a["amplitude_diff"], out / f"amplitude_diff_{slug}.png", f"|A(x_adv) - A(x)|, {m['attack']}: {name}", cbar="log-amplitude difference")
        index.append(f"- [{path.name}]({path.name}): clean-vs-adversarial ({m['attack']}) amplitude difference; mean {float(np.mean(a['amplitude_diff'])):.4f}")
        index.append("")
        summary.append(
            {"model": name, **{f"energy_below_r{m['energy_radius']} {k}": round(v, 4) for k, v in m["energy"].items()}, "heatmap_weighted_radius": m.get("heatmap_weighted_radius")}
        )
        for row in m["filtered"]:
            filtered.append({"model": name, **row})
    index.append("## Radial profiles\n")
    for atk, by_model in profiles.items():
        path = F.plot_profiles(by_model, out / f"radial_profiles_{_slug(atk)}.png", f"{atk} perturbation spectrum, radial profile", "share of amplitude")
        index.append(f"- [{path.name}]({path.name}): {atk}, every analysed model, each profile normalised to sum 1")
    index.append("")
    df = pd.DataFrame(filtered)
    atomic_write_text(out / "filtered_accuracy.csv", df.to_csv(index=False))
    atomic_write_text(out / "summary.csv", pd.DataFrame(summary).to_csv(index=False))
    index += ["## Filtered accuracy (%)", "", _filtered_markdown(df, attack_label), "", "## Summary", "", pd.DataFrame(summary).to_markdown(index=False), ""]
    atomic_write_text(out / "README.md", "\n".join(index))
    atomic_write_text(out / "analysis.json", json.dumps([{"model": r["display"], "seed": r["seed"], **r["metrics"]} for r in results], indent=1) + "\n")
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
