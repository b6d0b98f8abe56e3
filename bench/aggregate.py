"""Store -> one tidy table: a row per (run, attack) plus a synthesised ``worst`` row per run.

Aggregates are computed from the stored per-sample flags only. The worst case is the AND of the
robust flags of every attack, aligned by sample id: a sample counts as robust only if it survives
all of them (fra31/auto-attack#45).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.params import to_plain
from bench.plan import EvalJob, Plan
from bench.store import Store

WORST = "Worst case"


def load_flags(store: Store, job: EvalJob) -> dict[str, np.ndarray] | None:
    if not store.has("eval", job.key):
        return None
    with np.load(store.path("eval", job.key) / "flags.npz") as f:
        return {k: f[k] for k in f.files}


def _params(prefix: str, params: Any) -> dict[str, Any]:
    return {f"p_{prefix}_{k}": v for k, v in to_plain(params).items()}


def collect(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """Tidy rows for every planned (run, weights, attack) whose evaluation is in the store."""
    suite = plan.suite
    rows: list[dict[str, Any]] = []
    for tjob in plan.train_jobs:
        for wa in suite.wa:
            jobs = [e for e in plan.evals_of(tjob) if e.wa == wa]
            source = ("wa", tjob.wa_key(wa)) if wa else ("train", tjob.key)
            manifest = store.read_json(*source, "manifest.json") if store.has(*source) else {}
            rows.extend(_run_rows(suite, tjob, jobs, manifest, store))
    return rows


def _run_rows(suite: Any, tjob: Any, jobs: list[EvalJob], manifest: dict, store: Store) -> list[dict[str, Any]]:
    run_rows = []
    robust_all: list[np.ndarray] = []
    ids_ref = clean_ref = None
    for ejob in jobs:
        flags = load_flags(store, ejob)
        if flags is None:
            continue
        metrics = store.read_json("eval", ejob.key, "metrics.json")
        if ids_ref is None:
            ids_ref, clean_ref = flags["sample_id"], flags["clean"]
        elif not (np.array_equal(ids_ref, flags["sample_id"]) and np.array_equal(clean_ref, flags["clean"])):
            raise RuntimeError(f"evaluations of {ejob.display} disagree on the samples or clean flags ({ejob.key})")
        robust_all.append(flags["robust"])
        run_rows.append(
            {
                "attack": ejob.column,
                "attack_name": ejob.attack.name,
                "robust_acc": float(flags["robust"].mean()) if len(flags["robust"]) else float("nan"),
                "eval_key": ejob.key,
                "attack_version": ejob.attack.version,
                "eval_seconds": metrics.get("seconds"),
                "max_eps_violation": metrics.get("max_dist"),
                **_params("attack", ejob.attack.params),
            }
        )
    if not run_rows:
        return []
    if len(run_rows) == len(jobs):
        worst = np.logical_and.reduce(robust_all)
        run_rows.append({"attack": WORST, "attack_name": "worst", "robust_acc": float(worst.mean()), "eval_key": None})
    first = jobs[0]
    base = {
        "suite": suite.name,
        "dataset": suite.dataset.name,
        "model": suite.model.name,
        "defence": tjob.defence.name,
        "display_name": first.display,
        "wa": first.wa.kind if first.wa else "none",
        "weights": first.weights,
        "seed": tjob.seed,
        "n": int(len(ids_ref)),
        "clean_acc": float(clean_ref.mean()) if len(clean_ref) else float("nan"),
        "p_threat_norm": suite.threat.norm,
        "p_threat_eps": suite.threat.eps_text,
        **_params("defence", tjob.defence.params),
        **(_params("wa", first.wa) if first.wa else {}),
        "train_key": tjob.key,
        "defence_version": tjob.defence.version,
        "train_seconds": manifest.get("seconds"),
        "best_epoch": manifest.get("best_epoch"),
        **manifest.get("provenance", {}),
    }
    return [{**base, **r} for r in run_rows]
