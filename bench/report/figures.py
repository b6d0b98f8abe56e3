"""Figures (and their numbers as CSV) of a suite, rendered from the cache into ``<results>/<suite>/``.

* ``training_curves.png`` / ``.csv``: validation clean and robust accuracy per epoch for every
  leaderboard row and seed, read from each run's ``log.jsonl`` (averaged rows from the averager's
  ``<kind>_val_*`` entries), with the selected checkpoint marked (the manifest's ``best_epoch`` for
  ``best_val``, the last epoch for ``last``): robust overfitting is visible at a glance.
* ``robustness_curve.png`` / ``.csv`` (suites with ``eval.eps``): robust accuracy versus eps for
  every row, from the per-sample flags of the suite's radius and every ``eval.eps`` radius: the
  worst case over the suite's attacks at each radius (and each attack in the CSV), with the 95 %
  interval of ``bench/core/stats.py`` (Wilson for one seed, else the two-level bootstrap) as a band.

Every figure is written as PNG and as PDF beside it (``bench/core/plotting.py``: deterministic bytes).
Matplotlib is imported inside the plotting functions only (``Figure`` renders with Agg).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from bench.core import plotting as figures
from bench.core import stats
from bench.core.files import atomic_write_text
from bench.engine import entries as store_entries
from bench.engine.store import Store
from bench.plan.kinds import TRAIN
from bench.plan.tasks import Plan
from bench.report.aggregate import load_flags, worst_case
from bench.report.rows import WORST
from bench.types import ThreatModel

CURVE_FIELDS = ["row", "seed", "epoch", "val_clean", "val_robust", "selected"]
ROBUSTNESS_FIELDS = ["row", "norm", "eps", "eps_value", "column", "acc", "ci_low", "ci_high", "ci_method", "n", "seeds"]


def training_curves(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """One record per (row, seed, epoch) with validation accuracies in % and the selection mark."""
    suite = plan.suite
    records = []
    for tjob in plan.train_jobs:
        if tjob.zoo or not store.has(tjob.kind, tjob.key):
            continue
        log = store_entries.read_log(store, tjob.key)
        weights = store_entries.read_manifest(store, TRAIN, tjob.key).get("weights", {})
        for wa in suite.wa:
            job = next((e for e in plan.evals_of(tjob) if e.wa == wa), None)
            if job is None or job.weights.tag not in weights:
                continue
            row = job.display
            prefix = f"{wa.kind}_" if wa else ""
            entries = [r for r in log if f"{prefix}val_clean" in r]
            if not entries:
                continue
            best = weights[job.weights.tag].get("best_epoch")
            selected = best if suite.train.selection == "best_val" else entries[-1]["epoch"]
            for r in entries:
                robust = r.get(f"{prefix}val_robust")
                records.append({
                    "row": row, "seed": tjob.seed, "epoch": r["epoch"] + 1, "val_clean": 100 * r[f"{prefix}val_clean"],
                    "val_robust": None if robust is None else 100 * robust, "selected": r["epoch"] == selected,
                })  # fmt: skip
    return records


def training_figure(records: list[dict[str, Any]], title: str, n_epochs: int):
    """One panel per row on one y scale: robust (solid) and clean (dashed) validation accuracy per seed; ★ = selected."""
    from matplotlib.ticker import MaxNLocator

    rows = list(dict.fromkeys(r["row"] for r in records))
    fig, axes = figures.panels(len(rows), sharey=True)
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
        ax.set_xlim(0.5, n_epochs + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.yaxis.set_tick_params(labelleft=True)  # shared y: every panel keeps its numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    figures.title(fig, title)
    return fig


def robustness_curve(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """Accuracy (%) with its interval per (row, radius, attack) and the worst case, from the cache."""
    threats = sorted([plan.suite.threat, *plan.suite.eval_eps], key=lambda t: t.eps)
    records = []
    for row in dict.fromkeys(e.display for e in plan.eval_jobs):
        for threat in threats:
            # the attacks only: they run at every radius (an external file is checked at the suite's; corruptions have none)
            at = [e for e in plan.eval_jobs if e.display == row and (e.threat or plan.suite.threat) == threat and e.group == "attack"]
            per_attack: dict[str, stats.Runs] = {}
            for e in at:
                flags = load_flags(store, e)
                if flags is not None:
                    per_attack.setdefault(e.attack_column, {})[e.seed] = (flags["sample_id"], flags["robust"])
            seeds = sorted({e.seed for e in at})
            complete = [s for s in seeds if all(s in runs for runs in per_attack.values())]
            if len(per_attack) == len({e.attack_column for e in at}) and complete:
                per_attack[WORST] = {s: worst_case([runs[s] for runs in per_attack.values()]) for s in complete}
            for column, runs in per_attack.items():
                m = stats.run_matrix(runs)
                low, high, method = stats.accuracy_interval(list(m))
                records.append({
                    "row": row, "norm": threat.norm, "eps": threat.eps_text, "eps_value": float(threat.eps), "column": column,
                    "acc": 100 * float(m.mean()), "ci_low": 100 * low, "ci_high": 100 * high, "ci_method": method,
                    "n": m.shape[1], "seeds": m.shape[0],
                })  # fmt: skip
    return records


def robustness_figure(records: list[dict[str, Any]], title: str, threat: ThreatModel):
    """Worst-case robust accuracy versus eps, one line per row, with its 95 % interval as a band."""
    fig, (ax,) = figures.panels(1, width=8.0, height=4.5)
    ax.axvline(float(threat.eps), linestyle=":", color="grey", label=f"training ε = {threat.eps_text}")
    worst = [r for r in records if r["column"] == WORST]
    for i, row in enumerate(dict.fromkeys(r["row"] for r in worst)):
        mine = sorted((r for r in worst if r["row"] == row), key=lambda r: r["eps_value"])
        x = [r["eps_value"] for r in mine]
        ax.plot(x, [r["acc"] for r in mine], "o-", color=f"C{i % 10}", label=row)
        ax.fill_between(x, [r["ci_low"] for r in mine], [r["ci_high"] for r in mine], color=f"C{i % 10}", alpha=0.15)
    ticks = sorted({(r["eps_value"], r["eps"]) for r in worst})
    ax.set_xticks([v for v, _ in ticks], [t for _, t in ticks], rotation=45)
    ax.set_xlabel(f"ε ({'L∞' if threat.norm == 'Linf' else threat.norm}, pixel space)")
    ax.set_ylabel("worst-case robust accuracy (%)")
    ax.set_title(figures.wrap(fig, title))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the plot: never over a curve
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
        written += figures.save(training_figure(records, title, plan.suite.train.epochs), out / "training_curves.png")
        atomic_write_text(out / "training_curves.csv", _csv(records, CURVE_FIELDS))
        written.append(out / "training_curves.csv")
    if plan.suite.eval_eps:
        curve = robustness_curve(plan, store)
        if curve:
            title = f"{plan.suite.name}: robust accuracy versus ε (band: 95 % interval)"
            written += figures.save(robustness_figure(curve, title, plan.suite.threat), out / "robustness_curve.png")
            atomic_write_text(out / "robustness_curve.csv", _csv(curve, ROBUSTNESS_FIELDS))
            written.append(out / "robustness_curve.csv")
    return written
