"""Statistics of per-sample results: intervals, paired tests, multiple-comparison correction.

Pure functions on numpy arrays (no torch, no store), used by the leaderboard, the paper tables,
``bench compare`` and the sanity flags:

* :func:`wilson`: the 95 % Wilson score interval of k successes in n trials (one seed).
* :func:`bootstrap_interval`: a seeded two-level bootstrap over seeds and test examples for an
  accuracy measured with several seeds (percentile interval). Level 1 draws seeds with
  replacement; level 2 draws test examples with replacement, shared by the drawn seeds (every seed
  is evaluated on the same examples, so their example effects are shared). With one seed it is the
  ordinary bootstrap over examples. The same function gives the interval of a paired difference.
* :func:`mcnemar_exact`: the exact (binomial) two-sided McNemar test on discordant pair counts.
* :func:`holm`: Holm's step-down adjustment of a family of p-values.
* :func:`min_discordant` / :func:`detectable_difference`: the smallest effect an exact McNemar
  test can ever declare significant with a given number of (seed, example) pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
Z95 = 1.959963984540054  # standard normal 0.975 quantile
N_BOOT = 2000
BOOT_SEED = 0


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n (as fractions); (nan, nan) when n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _as_matrix(values: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """seeds x examples float matrix (a single 1-D array is one seed)."""
    m = np.asarray(values, dtype=float)
    return m[None, :] if m.ndim == 1 else m


def bootstrap_draws(values: np.ndarray | Sequence[np.ndarray], n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """``n_boot`` replicates of the mean of a seeds x examples matrix under the two-level bootstrap.

    Level 1 draws S seeds with replacement; level 2 draws n examples with replacement, the same
    draw for every seed. A replicate only depends on how many drawn examples fall on each distinct
    column pattern of the matrix, so level 2 is drawn as a multinomial over those patterns (the
    same distribution as drawing example indices, in O(patterns) instead of O(n)). Random stream
    (``numpy.random.default_rng(seed)``): seed indices ``integers(0, S, size=(n_boot, S))``, then
    pattern counts ``multinomial(n, pattern frequencies, size=n_boot)``.
    """
    m = _as_matrix(values)
    s, n = m.shape
    patterns, counts = np.unique(m.T, axis=0, return_counts=True)  # K x S, K
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, s, size=(n_boot, s))
    drawn = rng.multinomial(n, counts / n, size=n_boot)  # n_boot x K
    per_seed = drawn @ patterns / n  # n_boot x S: the replicate's example draw applied to every seed
    return np.take_along_axis(per_seed, seed_idx, axis=1).mean(axis=1)


def bootstrap_interval(
    values: np.ndarray | Sequence[np.ndarray], level: float = 0.95, n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> tuple[float, float]:
    """Percentile interval of :func:`bootstrap_draws` (fractions, or differences for paired data)."""
    m = _as_matrix(values)
    if m.size == 0:
        return math.nan, math.nan
    draws = bootstrap_draws(m, n_boot, seed)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def accuracy_interval(flags: Sequence[np.ndarray]) -> tuple[float, float, str]:
    """95 % interval of an accuracy from per-seed boolean flags: Wilson for one seed, else bootstrap."""
    if len(flags) == 1:
        f = np.asarray(flags[0], dtype=bool)
        return (*wilson(int(f.sum()), len(f)), "wilson")
    if len({len(f) for f in flags}) != 1:
        raise ValueError("every seed must have the same examples")
    return (*bootstrap_interval(np.stack([np.asarray(f, dtype=float) for f in flags])), "bootstrap")


def binom_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integer sum of C(n, i), one rounding at the end)."""
    total, term = 0, 1
    for i in range(k + 1):
        total += term
        term = term * (n - i) // (i + 1)  # C(n, i + 1), exact
    return total / 2**n


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (1 when there are none)."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binom_tail(min(b, c), n))


def discordant(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(a right & b wrong, a wrong & b right) over aligned boolean flags."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    return int((a & ~b).sum()), int((~a & b).sum())


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given; nan stays nan)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def min_discordant(alpha: float = ALPHA) -> int:
    """Fewest discordant pairs, all one way, for which the exact McNemar p-value is below alpha."""
    m = 1
    while mcnemar_exact(m, 0) >= alpha:
        m += 1
    return m


def detectable_difference(n_pairs: int, alpha: float = ALPHA) -> float:
    """Smallest accuracy difference (fraction) a paired exact test over ``n_pairs`` could ever detect."""
    return min_discordant(alpha) / n_pairs if n_pairs else math.nan


# --------------------------------------------------------------------------- rows of a leaderboard

Runs = dict[int, tuple[np.ndarray, np.ndarray]]  # seed -> (sample ids, per-sample correct flags)


def aligned(*runs: Runs) -> tuple[list[int], list[np.ndarray]]:
    """Common seeds and, per run, a seeds x examples bool matrix over the ids every run and seed has."""
    seeds = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
    if not seeds:
        return [], [np.zeros((0, 0), dtype=bool) for _ in runs]
    common = None
    for r in runs:
        for s in seeds:
            ids = r[s][0]
            common = ids if common is None else np.intersect1d(common, ids)
    out = []
    for r in runs:
        per_seed = []
        for s in seeds:
            ids, flags = r[s]
            keep = np.isin(ids, common)
            per_seed.append(np.asarray(flags, dtype=bool)[keep][np.argsort(ids[keep])])  # in the order of `common`
        out.append(np.stack(per_seed))
    return seeds, out


@dataclass(frozen=True)
class Paired:
    """Row a against row b on their common seeds and examples."""

    seeds: list[int]
    n: int  # common examples per seed
    a_only: int  # pairs a got right and b wrong (summed over seeds)
    b_only: int
    both_right: int
    both_wrong: int
    acc_a: float
    acc_b: float
    delta_low: float  # 95 % interval of acc_a - acc_b (two-level bootstrap, paired)
    delta_high: float
    p: float  # exact McNemar on the pooled discordant pairs

    @property
    def delta(self) -> float:
        return self.acc_a - self.acc_b


def paired(a: Runs, b: Runs, with_interval: bool = True) -> Paired:
    """Exact McNemar test (seeds paired, discordant pairs pooled) and the interval of the difference."""
    seeds, (ma, mb) = aligned(a, b)
    if not seeds or ma.shape[1] == 0:
        return Paired(seeds, 0, 0, 0, 0, 0, math.nan, math.nan, math.nan, math.nan, math.nan)
    only_a, only_b = discordant(ma.ravel(), mb.ravel())
    right, wrong = int((ma & mb).sum()), int((~ma & ~mb).sum())
    low, high = bootstrap_interval(ma.astype(float) - mb) if with_interval else (math.nan, math.nan)
    return Paired(
        seeds, ma.shape[1], only_a, only_b, right, wrong, float(ma.mean()), float(mb.mean()), low, high, mcnemar_exact(only_a, only_b)
    )


@dataclass(frozen=True)
class CellStats:
    """One (row, column) cell of a leaderboard compared with the other rows of its column."""

    mean: float  # accuracy (fraction), mean over seeds
    ci_low: float
    ci_high: float
    method: str  # "wilson" (one seed) or "bootstrap" (several)
    n: int
    n_seeds: int
    is_best: bool
    p_vs_best: float  # Holm-adjusted exact McNemar p against the best row (nan for the best row)
    tied_with_best: bool  # the best row itself, or not significantly different from it
    rank_low: int  # rank range from all pairwise tests (Holm over all pairs)
    rank_high: int


def run_matrix(r: Runs) -> np.ndarray:
    return aligned(r)[1][0]


def column_stats(cells: dict[str, Runs], alpha: float = ALPHA) -> dict[str, CellStats]:
    """Intervals, p-values against the best row, ties and rank ranges for one column's rows."""
    names = [name for name, r in cells.items() if r]
    mats = {name: run_matrix(cells[name]) for name in names}
    means = {name: float(m.mean()) if m.size else math.nan for name, m in mats.items()}
    ranked = [name for name in names if not math.isnan(means[name])]
    if not ranked:
        return {}
    best = max(ranked, key=lambda name: means[name])
    others = [name for name in ranked if name != best]
    p_best = dict(zip(others, holm([paired(cells[o], cells[best], False).p for o in others])))
    pairs = [(i, j) for k, i in enumerate(ranked) for j in ranked[k + 1 :]]
    tests = [paired(cells[i], cells[j], False) for i, j in pairs]
    adjusted = holm([t.p for t in tests])
    better = {name: 0 for name in ranked}  # rows significantly better than it
    worse = {name: 0 for name in ranked}  # rows significantly worse than it
    for (i, j), t, p in zip(pairs, tests, adjusted):
        if p < alpha:
            hi, lo = (i, j) if t.a_only > t.b_only else (j, i)
            better[lo] += 1
            worse[hi] += 1
    out = {}
    for name in ranked:
        m = mats[name]
        low, high, method = accuracy_interval(list(m))
        p = p_best.get(name, math.nan)
        out[name] = CellStats(
            means[name], low, high, method, m.shape[1], m.shape[0], name == best, p,
            name == best or p >= alpha, 1 + better[name], len(ranked) - worse[name],
        )  # fmt: skip
    return out
