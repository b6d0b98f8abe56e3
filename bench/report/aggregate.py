"""Store -> the typed result rows (``bench/report/rows.py``): one per (run, attack) plus a synthesised
``worst`` row per run. The only place a ``ResultRow`` is built from the cache.

Aggregates are computed from the stored per-sample flags only. The worst case is the AND of the
robust flags of every attack, aligned by sample id: a sample counts as robust only if it survives
all of them (fra31/auto-attack#45).

Every row also carries the statistics of its leaderboard cell (``ResultRow.cell``, ``bench/core/stats.py``),
computed from the per-sample flags of every seed: ``ci_low`` / ``ci_high`` (95 %, in %), ``ci_method``,
``p_vs_best`` (``stats.paired_p`` against the column's best row, Holm-corrected over all pairs of
the column's rows), ``tied_with_best`` (bold: no row significantly better, i.e. ``rank_low == 1``),
``is_best`` and ``rank_low`` / ``rank_high``; the same for the Clean column in ``clean_cell``.
The attack-comparison sanity flags of a run are computed from all seeds of its leaderboard row
(the same values on every seed's rows), so a row with S seeds is tested once, not S times.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from bench.core import stats
from bench.core.params import to_plain
from bench.engine import entries
from bench.engine.store import Store
from bench.evaluation import parity
from bench.evaluation.randomised import model_flags
from bench.evaluation.sanity import run_flags
from bench.plan.kinds import EVAL, TRAIN
from bench.plan.tasks import EvalJob, Plan
from bench.registry import ATTACKS
from bench.report.rows import CLEAN, CORRUPTION_MEAN, WORST, CellStats, ResultRow

__all__ = ["add_cell_stats", "collect", "collect_outcomes", "load_flags", "worst_case"]

Outcomes = dict[tuple[str, str], stats.Runs]  # (leaderboard row, column) -> seed -> (sample ids, correct flags)


def load_flags(store: Store, job: EvalJob) -> dict[str, np.ndarray] | None:
    if not store.has(job.kind, job.key):
        return None
    return entries.read_flags(store, EVAL, job.key)


def _params(params: Any) -> dict[str, Any]:
    return dict(to_plain(params) or {})


def collect(plan: Plan, store: Store) -> list[ResultRow]:
    """The result rows of every planned (run, weights, attack) whose evaluation is in the store."""
    return collect_outcomes(plan, store)[0]


def collect_outcomes(plan: Plan, store: Store) -> tuple[list[ResultRow], Outcomes]:
    """The result rows (with their cell statistics) and the per-sample outcomes they come from."""
    suite = plan.suite
    rows: list[ResultRow] = []
    outcomes: Outcomes = {}
    runs = []
    for tjob in plan.train_jobs:
        for wa in suite.wa:
            jobs = [e for e in plan.evals_of(tjob) if e.wa == wa and e.threat is None]  # eval.eps radii: curves only
            if jobs:
                runs.append((tjob, jobs, *_load_run(jobs, tjob.seed, store, outcomes, plan.incomplete(jobs[0].display, tjob.seed))))
    for tjob, jobs, loaded, model in runs:  # every seed's outcomes are in: the flags pool them per row
        if loaded:
            manifest = entries.read_manifest(store, TRAIN, tjob.key) if store.has(tjob.kind, tjob.key) else {}
            sjob = plan.sanity_of(tjob, jobs[0].wa)
            checks = entries.read_checks(store, sjob.key) if sjob and store.has(sjob.kind, sjob.key) else None
            rows.extend(_run_rows(suite, tjob, jobs, manifest, checks, loaded, model, outcomes))
    return add_cell_stats(rows, outcomes), outcomes


def column_outcomes(outcomes: Outcomes, column: str) -> dict[str, stats.Runs]:
    """Leaderboard row -> per-seed outcomes of one column."""
    return {row: runs for (row, col), runs in outcomes.items() if col == column}


def add_cell_stats(rows: list[ResultRow], outcomes: Outcomes) -> list[ResultRow]:
    """The rows with the statistics of their cell and of their row's Clean cell."""
    columns = dict.fromkeys(col for _, col in outcomes)
    cells = {col: stats.column_stats(column_outcomes(outcomes, col)) for col in columns}

    def of(col: str, display: str) -> CellStats | None:
        cell = cells.get(col, {}).get(display)
        return None if cell is None else cell_stats(cell)

    return [replace(r, cell=of(r.attack, r.display_name), clean_cell=of(CLEAN, r.display_name)) for r in rows]


def cell_stats(cell: stats.CellStats) -> CellStats:
    return CellStats(
        ci_low=100 * cell.ci_low,
        ci_high=100 * cell.ci_high,
        ci_method=cell.method,
        p_vs_best=cell.p_vs_best,
        tied_with_best=cell.tied_with_best,
        is_best=cell.is_best,
        rank_low=cell.rank_low,
        rank_high=cell.rank_high,
    )


def _ran(manifest: dict[str, Any]) -> str | None:
    """The precision path an entry ran (``auto`` resolved where it ran); entries from before ``auto``: the asked one."""
    fast = manifest.get("fast_paths") or {}
    return fast.get("precision_ran") or fast.get("precision")


def _load_run(
    jobs: list[EvalJob], seed: int, store: Store, outcomes: Outcomes, waiting: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One run's evaluated columns: their ``ResultRow`` fields, recorded in ``outcomes`` (with Clean and Worst case),
    and the run's model flags (randomised or probability outputs: ``bench/evaluation/randomised.py``). The worst case
    is over the attacks and external columns (none while ``waiting`` for an external file); the corruption columns
    have their mean instead (``CORRUPTION_MEAN``)."""
    run_rows = []
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (sample_id, clean, robust) per evaluation
    checks_by_eval = []  # (column, attack name, params, model check) per evaluation: bench/evaluation/randomised.py
    notes = []  # external columns with test ids they have no example for
    for ejob in jobs:
        flags = load_flags(store, ejob)
        if flags is None:
            continue
        metrics = entries.read_metrics(store, EVAL, ejob.key)
        eval_manifest = entries.read_manifest(store, EVAL, ejob.key)
        results.append((flags["sample_id"], flags["clean"], flags["robust"]))
        attack = ejob.group == "attack"
        checks_by_eval.append((ejob.column, ejob.attack.name if attack else "none", ejob.attack.params, metrics.get("model_check")))
        outcomes.setdefault((ejob.display, ejob.column), {})[seed] = (flags["sample_id"], flags["robust"])
        if metrics.get("external_missing"):
            notes.append(f"{ejob.column}: no adversarial example for {metrics['external_missing']} evaluated test id(s), counted robust where clean")
        run_rows.append(
            {
                "attack": ejob.column,
                "attack_name": ejob.attack.name,
                "family": ATTACKS.get(ejob.attack.name).family if attack else ejob.group,
                "n": int(len(flags["sample_id"])),
                "robust_acc": float(flags["robust"].mean()) if len(flags["robust"]) else float("nan"),
                "eval_key": ejob.key,
                "attack_version": ejob.attack.version,
                "eval_seconds": metrics.get("seconds"),
                "eval_device": eval_manifest.get("provenance", {}).get("device"),
                "eval_precision": _ran(eval_manifest),
                "max_perturbation": metrics.get("max_dist"),  # largest distance of x_adv from x (in the threat's norm); > eps is an error
                "parity": parity.row_fields(metrics["parity"]) if "parity" in metrics else None,  # a low-precision evaluation
                "attack_params": _column_params(ejob),
            }
        )
    if not run_rows:
        return run_rows, {}
    randomised = any(c and c["randomised"] for *_, c in checks_by_eval)
    ref_ids, clean, differ = _align(results, jobs[0].display, randomised)
    outcomes.setdefault((jobs[0].display, CLEAN), {})[seed] = (ref_ids, clean)
    done = {r["attack"]: r for r in run_rows}
    worst_jobs = [j for j in jobs if j.group != "corruption"]
    if worst_jobs and all(j.column in done for j in worst_jobs) and not waiting:
        common, worst = worst_case([(ids, robust) for (ids, _, robust), r in zip(results, run_rows) if r["family"] != "corruption"])
        outcomes.setdefault((jobs[0].display, WORST), {})[seed] = (common, worst)
        run_rows.append(
            {"attack": WORST, "attack_name": "worst", "family": "worst", "n": int(len(common)), "robust_acc": float(worst.mean()), "eval_key": None}
        )
    corrupted = [done.get(j.column) for j in jobs if j.group == "corruption"]
    if len(corrupted) > 1 and all(corrupted):  # the mean over the corruption columns (no per-sample cell of its own)
        n = min(r["n"] for r in corrupted)
        mean = float(np.mean([r["robust_acc"] for r in corrupted]))
        run_rows.append({"attack": CORRUPTION_MEAN, "attack_name": "corruption-mean", "family": "corruption", "n": n, "robust_acc": mean, "eval_key": None})
    model = model_flags(checks_by_eval, differ)
    if notes:
        model["flags"] = "; ".join([m for m in (model.get("flags"), *notes) if m])
    return run_rows, model


def _column_params(job: EvalJob) -> dict[str, Any]:
    """The ``p_attack_*`` columns: an attack's parameters, a corruption's severity and source, an external column's file."""
    ref = job.attack
    if ref.kind == "corruption":
        return {"severity": ref.severity, "source": ref.source}
    if ref.kind == "external":
        return {"file": ref.path.name, "sha256": ref.digest}
    return _params(ref.params)


def _run_rows(
    suite: Any, tjob: Any, jobs: list[EvalJob], manifest: dict, checks: dict | None, run_rows: list[dict[str, Any]],
    model: dict[str, Any], outcomes: Outcomes,
) -> list[ResultRow]:  # fmt: skip
    """The run's rows: its attack columns (from :func:`_load_run`) with the run's fields, flags and provenance."""
    first = jobs[0]
    clean = outcomes[(first.display, CLEAN)][tjob.seed][1]
    attacks = [{"family": r["family"], "runs": outcomes[(first.display, r["attack"])]} for r in run_rows if r["eval_key"]]
    flags = run_flags(checks, attacks, cascade=any(j.after for j in jobs))
    flags.update(parity.parity_flags([{"attack": r["attack"], **(r.get("parity") or {})} for r in run_rows]))
    messages = (model.get("flags"), flags.get("flags"), flags.pop("parity_message", None))
    checks = {**flags, **model, **health_flags(manifest.get("health", {}), "; ".join(m for m in messages if m))}
    base = {
        "suite": suite.name,
        "dataset": suite.dataset.name,
        "model": tjob.model or suite.model.name,
        "defence": tjob.defence.name,
        "display_name": first.display,
        "wa": first.wa.kind if first.wa else "none",
        "weights": first.weights_label,
        "seed": tjob.seed,
        "clean_n": int(len(clean)),
        "clean_acc": float(clean.mean()) if len(clean) else float("nan"),
        "threat_norm": suite.threat.norm,
        "threat_eps": suite.threat.eps_text,
        "defence_params": _params(tjob.defence.params),
        "wa_params": _params(first.wa) if first.wa else None,
        "train_key": tjob.key,
        "defence_version": tjob.defence.version,
        "train_seconds": manifest.get("seconds"),
        "train_precision": _ran(manifest),
        "best_epoch": _one_based(manifest.get("weights", {}).get(first.weights.tag, {}).get("best_epoch")),
        "flags": checks.pop("flags"),
        "checks": checks,
        "provenance": dict(manifest.get("provenance", {})),
    }
    return [ResultRow(**base, **r) for r in run_rows]


def _one_based(epoch: int | None) -> int | None:
    """Epochs are shown counted from 1, as the console prints them (``epoch 3/4``); the manifest and
    ``log.jsonl`` store them from 0 (unchanged, so every cached run stays readable)."""
    return None if epoch is None else epoch + 1


HEALTH = {
    "at_chance_epoch": "training: validation accuracy still at chance after epoch {}",
    "robust_collapse_epochs": "training: validation robust accuracy collapsed at epoch {} (catastrophic overfitting?)",
}


def health_flags(health: dict[str, Any], flags: str) -> dict[str, Any]:
    """The run's training-health record as flag columns, its messages appended to ``flags``."""
    out: dict[str, Any] = {"flag_train_at_chance": "at_chance_epoch" in health, "flag_robust_collapse": "robust_collapse_epochs" in health}
    messages = [HEALTH[k].format(", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in health.items() if k in HEALTH]
    out["flags"] = "; ".join([m for m in [flags, *messages] if m])
    return out


def worst_case(results: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sample ids every attack saw and, on them, the AND of the attacks' robust flags."""
    common = results[0][0]
    for ids, _ in results[1:]:
        common = np.intersect1d(common, ids)
    return common, np.logical_and.reduce([robust[np.isin(ids, common)] for ids, robust in results])


def _align(
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]], display: str, randomised: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """The ids and clean flags of the largest evaluation, and on how many examples another evaluation differs.

    Attacks may run on nested subsets; where they overlap, their clean flags must agree (same
    weights, same inputs), otherwise the cache is inconsistent and aggregation stops. A randomised
    model's clean verdicts are majorities over seeded draws that can differ where the batches differ
    (``bench/evaluation/randomised.py``): the count is returned and shown as a flag instead.
    """
    ref_ids, ref_clean, _ = max(results, key=lambda r: len(r[0]))
    differ = 0
    for ids, clean, _ in results:
        expected = ref_clean[np.isin(ref_ids, ids)]
        if len(expected) != len(clean):
            raise RuntimeError(f"evaluations of {display} are on sample ids that are not nested subsets of each other")
        mismatched = int((np.asarray(clean, dtype=bool) != expected.astype(bool)).sum())
        if mismatched and not randomised:
            raise RuntimeError(f"evaluations of {display} disagree on the clean predictions of {mismatched} example(s)")
        differ = max(differ, mismatched)
    return ref_ids, ref_clean, differ
