"""Figures (and their numbers as CSV) of a suite, rendered from the cache into ``<results>/<suite>/``.

* ``training_curves.png`` / ``.csv``: validation clean and robust accuracy per epoch for every
  leaderboard row and seed, read from each run's ``log.jsonl`` (averaged rows from the averager's
  ``<kind>_val_*`` entries), with the selected checkpoint marked (the manifest's ``best_epoch`` for
  ``best_val``, the last epoch for ``last``): robust overfitting is visible at a glance.

Matplotlib is imported inside the plotting functions only (``Figure`` renders with Agg).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from bench.plan import Plan
from bench.store import Store, atomic_write_text

CURVE_FIELDS = ["row", "seed", "epoch", "val_clean", "val_robust", "selected"]


def _figure(n_panels: int, width: float = 4.0, height: float = 3.0):
    from matplotlib.figure import Figure

    cols = min(4, max(n_panels, 1))
    rows = math.ceil(max(n_panels, 1) / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def training_curves(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """One record per (row, seed, epoch) with validation accuracies in % and the selection mark."""
    suite = plan.suite
    records = []
    for tjob in plan.train_jobs:
        if tjob.zoo or not store.has("train", tjob.key):
            continue
        log = [json.loads(line) for line in (store.path("train", tjob.key) / "log.jsonl").read_text().splitlines() if line]
        for wa in suite.wa:
            row = next((e.display for e in plan.evals_of(tjob) if e.wa == wa), None)
            source = ("wa", tjob.wa_key(wa)) if wa else ("train", tjob.key)
            if row is None or not store.has(*source):
                continue
            prefix = f"{wa.kind}_" if wa else ""
            entries = [r for r in log if f"{prefix}val_clean" in r]
            if not entries:
                continue
            best = store.read_json(*source, "manifest.json").get("best_epoch")
            selected = best if suite.train.selection == "best_val" else entries[-1]["epoch"]
            for r in entries:
                robust = r.get(f"{prefix}val_robust")
                records.append({
                    "row": row, "seed": tjob.seed, "epoch": r["epoch"], "val_clean": 100 * r[f"{prefix}val_clean"],
                    "val_robust": None if robust is None else 100 * robust, "selected": r["epoch"] == selected,
                })  # fmt: skip
    return records


def training_figure(records: list[dict[str, Any]], title: str, n_epochs: int):
    """One panel per row: robust (solid) and clean (dashed) validation accuracy per seed; ★ = selected."""
    rows = list(dict.fromkeys(r["row"] for r in records))
    fig, axes = _figure(len(rows))
    for ax, row in zip(axes, rows):
        mine = [r for r in records if r["row"] == row]
        for i, seed in enumerate(dict.fromkeys(r["seed"] for r in mine)):
            runs = [r for r in mine if r["seed"] == seed]
            colour = f"C{i}"
            epochs = [r["epoch"] for r in runs]
            ax.plot(epochs, [r["val_clean"] for r in runs], ".--", color=colour, label=f"clean (seed {seed})")
            has_robust = any(r["val_robust"] is not None for r in runs)
            if has_robust:
                ax.plot(epochs, [r["val_robust"] for r in runs], ".-", color=colour, label=f"robust (seed {seed})")
            for r in runs:
                if r["selected"]:
                    value = r["val_robust"] if has_robust else r["val_clean"]
                    ax.plot([r["epoch"]], [value], "*", color=colour, markersize=12, label=f"selected (epoch {r['epoch']})")
        ax.set_title(row)
        ax.set_xlim(-0.5, n_epochs - 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(title)
    return fig


def _csv(records: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def write_figures(plan: Plan, store: Store, out: Path) -> list[Path]:
    """Render every figure the cache allows into ``out``; returns the files written."""
    written = []
    records = training_curves(plan, store)
    if records:
        title = f"{plan.suite.name}: validation accuracy per epoch (★ = selected checkpoint, {plan.suite.train.selection})"
        fig = training_figure(records, title, plan.suite.train.epochs)
        fig.savefig(out / "training_curves.png", dpi=100)
        atomic_write_text(out / "training_curves.csv", _csv(records, CURVE_FIELDS))
        written += [out / "training_curves.png", out / "training_curves.csv"]
    return written
