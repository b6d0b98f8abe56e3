"""The fp32 parity check of a low-precision evaluation (``eval.precision`` bf16, fp16, tf32 or auto).

Each evaluation that ran in a path other than fp32 re-attacks a slice of its points in fp32: about a
sixteenth of them (16 to 64), **drawn at random per evaluation, seeded by its key** (so a slice is
reproducible and different evaluations check different points; a shard draws from its own points).
Stored in the evaluation's ``metrics.json`` as ``parity``: the slice's size, both robust accuracies,
the per-sample disagreements each way (``low_only``: robust in the low precision only, which is how
a weakened attack shows; ``fp32_only``), the exact McNemar p-value of the two runs on the slice, and
the 95 % interval of the difference (paired bootstrap, ``bench/core/stats.py``).

The leaderboard pools the slices of a run (``parity_note``) and raises a flag on a row whose
evaluations disagree with fp32 significantly (``parity_flags``: exact McNemar per evaluation,
Holm-corrected over the row's evaluations, at ``stats.ALPHA``). The attack's randomness differs
between the two runs, so a few disagreements on margin points are expected; a significant excess
one way is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.core import stats

PARITY_MIN, PARITY_MAX, PARITY_SHARE = 16, 64, 16  # between 16 and 64 points, about 1/16 of the evaluation


def parity_size(n: int) -> int:
    """Points of an ``n``-point low-precision evaluation re-attacked in fp32: n/16, at least 16 and at most 64
    (all if fewer). Small per evaluation on purpose: the check is for a systematic gap, which shows in
    the slices pooled over a run (the leaderboard's note) and in each row's flag."""
    return min(n, max(PARITY_MIN, min(PARITY_MAX, n // PARITY_SHARE)))


def parity_slice(n: int, seed: int) -> np.ndarray:
    """The positions (sorted) of the points of an ``n``-point evaluation re-attacked in fp32, drawn with ``seed``."""
    return np.sort(np.random.RandomState(seed % 2**32).choice(n, parity_size(n), replace=False))


def difference_interval(low_only: int, fp32_only: int, n: int) -> tuple[float, float]:
    """95 % interval (pp) of robust accuracy low - fp32 from the slice's disagreements (paired bootstrap)."""
    if n == 0:
        return float("nan"), float("nan")
    d = np.zeros(n)
    d[:low_only], d[low_only : low_only + fp32_only] = 1.0, -1.0
    lo, hi = stats.bootstrap_interval(d)
    return 100 * lo, 100 * hi


def check(path: str, low: np.ndarray, fp32: np.ndarray, seconds: float) -> dict[str, Any]:
    """The parity record of one slice: ``low`` and ``fp32`` are its per-sample robust flags in each run."""
    low, fp32 = np.asarray(low, dtype=bool), np.asarray(fp32, dtype=bool)
    return _record(path, len(low), int((low & ~fp32).sum()), int((~low & fp32).sum()), float(low.mean()) if len(low) else float("nan"),
                   float(fp32.mean()) if len(fp32) else float("nan"), seconds)  # fmt: skip


def _record(path: str, n: int, low_only: int, fp32_only: int, acc_low: float, acc_fp32: float, seconds: float) -> dict[str, Any]:
    lo, hi = difference_interval(low_only, fp32_only, n)
    return {
        "path": path,
        "n": n,
        "robust_acc_low": acc_low,
        "robust_acc_fp32": acc_fp32,
        "diff_pp": 100 * (low_only - fp32_only) / n if n else 0.0,
        "diff_low_pp": lo,
        "diff_high_pp": hi,
        "low_only": low_only,
        "fp32_only": fp32_only,
        "flips": low_only + fp32_only,
        "p": stats.mcnemar_exact(low_only, fp32_only),
        "seconds": round(seconds, 3),
    }


def pool(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Several slices as one (a sharded evaluation: one slice per shard)."""
    n = sum(int(c["n"]) for c in checks)
    pooled = lambda key: sum(c[key] * c["n"] for c in checks) / n if n else float("nan")  # noqa: E731
    return _record(checks[0]["path"], n, sum(int(c["low_only"]) for c in checks), sum(int(c["fp32_only"]) for c in checks),
                   pooled("robust_acc_low"), pooled("robust_acc_fp32"), sum(c["seconds"] for c in checks))  # fmt: skip


def row_fields(check_: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's parity record as columns of its tidy row (entries from before this layout: None)."""
    if "low_only" not in check_:  # written by an earlier version: the first points, no disagreement counts
        return {"parity_n": check_["n"], "parity_pp": check_["diff_pp"], "parity_flips": check_["flips"]}
    return {
        "parity_path": check_["path"], "parity_n": check_["n"], "parity_pp": check_["diff_pp"],
        "parity_low_only": check_["low_only"], "parity_fp32_only": check_["fp32_only"], "parity_flips": check_["flips"],
        "parity_p": check_["p"],
    }  # fmt: skip


def parity_flags(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's flag columns from its evaluations' parity slices: ``flag_parity`` when one differs from fp32
    significantly (exact McNemar per slice, Holm over the run's slices), its smallest adjusted p and the message."""
    checked = [r for r in rows if r.get("parity_p") is not None]
    if not checked:
        return {}
    adjusted = stats.holm([float(r["parity_p"]) for r in checked])
    i = int(np.argmin(adjusted))
    out: dict[str, Any] = {"flag_parity_p": adjusted[i], "flag_parity": adjusted[i] < stats.ALPHA}
    if out["flag_parity"]:
        r = checked[i]
        out["parity_message"] = (f"{r['attack']} in {r['parity_path']} differs from fp32 on its parity slice "
                                 f"({r['parity_pp']:+.1f} pp robust over {r['parity_n']} points, p = {adjusted[i]:.2g})")  # fmt: skip
    return out


def parity_note(rows: list[dict[str, Any]]) -> str:
    """The run's parity slices pooled, for the leaderboard header: difference with its interval, disagreements, flags."""
    checks = [r for r in rows if r.get("parity_n") is not None]
    if not checks:
        return "no fp32 parity check recorded"
    n = sum(int(r["parity_n"]) for r in checks)
    diff = sum(r["parity_pp"] * r["parity_n"] for r in checks) / max(n, 1)
    flips = sum(int(r["parity_flips"]) for r in checks)
    text = f"fp32 parity: a random slice of each of {len(checks)} evaluations ({n} points in all) attacked again in fp32, robust accuracy low − fp32 {diff:+.2f} pp pooled"
    counted = [r for r in checks if r.get("parity_low_only") is not None]
    if len(counted) == len(checks):
        low_only = sum(int(r["parity_low_only"]) for r in counted)
        fp32_only = sum(int(r["parity_fp32_only"]) for r in counted)
        lo, hi = difference_interval(low_only, fp32_only, n)
        text += f" [95 % interval {lo:+.2f}, {hi:+.2f}]; {low_only} point(s) robust only in the low precision, {fp32_only} only in fp32"
    else:
        text += f", {flips} per-sample flag(s) differ"
    flagged = sorted({r["display_name"] for r in rows if r.get("flag_parity")})
    return text + (f"; significant on {', '.join(flagged)} (see the flags)" if flagged else "; no row differs significantly")
