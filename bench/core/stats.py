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
* :func:`paired_p`: the one paired test of two rows, with the test example as the independent
  unit: one seed, the exact McNemar test; several seeds, the exact sign-flip test of the
  per-example differences summed over seeds (seeds of one example are not independent: a row
  that is robust on other examples than another stays so on every seed).
* :func:`holm`: Holm's step-down adjustment of a family of p-values.
* :func:`ranks`: rank ranges of a column's rows from all pairwise tests (Holm over all pairs);
  a row is bold iff its range starts at 1, so bold never contradicts the ranks.
* :func:`min_discordant` / :func:`detectable_difference`: the smallest effect the paired test can
  ever declare significant with a given number of examples and seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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


SIGN_FLIP = "exact sign-flip test over examples (seeds summed per example)"
MCNEMAR = "exact McNemar test"


def test_name(n_seeds: int) -> str:
    """The paired test :func:`paired_p` makes with ``n_seeds`` seeds, as printed."""
    return MCNEMAR if n_seeds <= 1 else SIGN_FLIP


@lru_cache(maxsize=256)
def _half_binomial_pmf(c: int) -> np.ndarray:
    """P(B = j), j = 0..c, for B ~ Binomial(c, 1/2): each value rounded once from exact integers."""
    coeffs, term = [], 1
    for i in range(c + 1):
        coeffs.append(term)
        term = term * (c - i) // (i + 1)
    pmf = np.array([k / 2**c for k in coeffs])
    pmf.flags.writeable = False  # cached: shared by every caller
    return pmf


def _sign_flip_upper_tail(magnitudes: np.ndarray, counts: np.ndarray, u0: int) -> float:
    """P(U >= u0) for U = sum over groups of v * Binomial(c_v, 1/2), by exact convolution (float64).

    ``T = 2U - M`` (M = sum of v * c_v) is the sum of c_v copies of +-v with independent fair
    signs. Each group is a binomial at stride v: convolved residue class by residue class, so the
    cost is len(distribution) x c_v per group. All terms are non-negative (no cancellation).
    """
    dist = np.ones(1)
    for v, c in zip(magnitudes.tolist(), counts.tolist()):
        pmf = _half_binomial_pmf(c)
        new = np.zeros(len(dist) + v * c)
        for r in range(min(v, len(dist))):
            new[r::v] = np.convolve(dist[r::v], pmf)
        dist = new
    return float(dist[u0:][::-1].sum())  # smallest terms first


def paired_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value that rows a and b are equally accurate, the test example being the unit.

    ``a`` and ``b``: boolean arrays shaped (seeds, examples), aligned (1-D = one seed). Per
    example, d_i = sum over seeds of (a - b), in -S..S. Under the null (per example, a's and b's
    flags are exchangeable; examples independent) the signs of the d_i are independent fair coins
    given |d_i|, whatever the per-example robustness probabilities. The statistic is T = sum d_i;
    p = P(|T'| >= |T|) over the 2^m sign flips of the m nonzero d_i, computed exactly by
    convolution; as T' is symmetric this equals min(1, 2 P(T' >= |T|)), the definition of
    :func:`mcnemar_exact`. The |d_i| are first divided by their greatest common divisor (the same
    p, exactly), so with one distinct |d_i| (always the case with one seed) it *is* the exact
    McNemar test on the examples that favour a and b, and copying every seed k times leaves p
    unchanged to the last bit. 1 when the rows never differ.
    """
    ma, mb = _as_matrix(np.asarray(a, dtype=bool)), _as_matrix(np.asarray(b, dtype=bool))
    if ma.shape != mb.shape:
        raise ValueError(f"paired_p: a and b must have the same (seeds, examples) shape, got {ma.shape} and {mb.shape}")
    d = (ma.astype(np.int64) - mb.astype(np.int64)).sum(axis=0)
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    d = d // np.gcd.reduce(np.abs(d))
    magnitudes, counts = np.unique(np.abs(d), return_counts=True)
    if len(magnitudes) == 1:
        return mcnemar_exact(int((d > 0).sum()), int((d < 0).sum()))
    t, total = int(abs(d.sum())), int((magnitudes * counts).sum())
    return min(1.0, 2 * _sign_flip_upper_tail(magnitudes, counts, (t + total) // 2))


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
    """Fewest differing examples, all one way, for which :func:`paired_p` can be below alpha.

    With m examples that differ, p >= 2^(1-m) (all m signs alike is the most extreme outcome
    of the sign flips), whatever the |d_i|; with all one way and equal |d_i| it is exactly that.
    """
    m = 1
    while mcnemar_exact(m, 0) >= alpha:
        m += 1
    return m


def detectable_difference(n_examples: int, n_seeds: int = 1, alpha: float = ALPHA) -> float:
    """Smallest accuracy difference (fraction) :func:`paired_p` could ever declare significant.

    k = :func:`min_discordant` examples must differ, all the same way; each shifts the mean
    accuracy over seeds by at least 1/(n S) (when it differs on one seed), so below k/(n S)
    nothing is ever significant, and k/(n S) is reached (k examples, one seed each, one way).
    A difference carried by the same examples on every seed needs k/n.
    """
    return min_discordant(alpha) / (n_examples * n_seeds) if n_examples and n_seeds else math.nan


# --------------------------------------------------------------------------- rows of a leaderboard

Runs = dict[int, tuple[np.ndarray, np.ndarray]]  # seed -> (sample ids, per-sample correct flags)


def aligned(*runs: Runs) -> tuple[list[int], list[np.ndarray]]:
    """Common seeds and, per run, a seeds x examples bool matrix over the ids every run and seed has."""
    seeds = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
    if not seeds:
        return [], [np.zeros((0, 0), dtype=bool) for _ in runs]
    ids0 = runs[0][seeds[0]][0]
    if all(np.array_equal(r[s][0], ids0) for r in runs for s in seeds):  # the usual case: the same examples everywhere
        order = np.argsort(ids0)
        return seeds, [np.stack([np.asarray(r[s][1], dtype=bool)[order] for s in seeds]) for r in runs]
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
    a_only: int  # (seed, example) pairs a got right and b wrong (summed over seeds)
    b_only: int
    both_right: int
    both_wrong: int
    acc_a: float
    acc_b: float
    delta_low: float  # 95 % interval of acc_a - acc_b (two-level bootstrap, paired)
    delta_high: float
    p: float  # paired_p: exact McNemar (one seed) or exact sign-flip test over examples (several)
    favour_a: int = 0  # examples whose difference summed over seeds favours a
    favour_b: int = 0
    test: str = MCNEMAR  # the test behind p, as printed

    @property
    def delta(self) -> float:
        return self.acc_a - self.acc_b


def paired(a: Runs, b: Runs, with_interval: bool = True) -> Paired:
    """:func:`paired_p` on the common seeds and examples, the 2x2 table and the interval of the difference."""
    seeds, (ma, mb) = aligned(a, b)
    if not seeds or ma.shape[1] == 0:
        return Paired(seeds, 0, 0, 0, 0, 0, math.nan, math.nan, math.nan, math.nan, math.nan, test=test_name(len(seeds)))
    only_a, only_b = discordant(ma.ravel(), mb.ravel())
    right, wrong = int((ma & mb).sum()), int((~ma & ~mb).sum())
    d = (ma.astype(int) - mb).sum(axis=0)
    low, high = bootstrap_interval(ma.astype(float) - mb) if with_interval else (math.nan, math.nan)
    return Paired(
        seeds, ma.shape[1], only_a, only_b, right, wrong, float(ma.mean()), float(mb.mean()), low, high,
        paired_p(ma, mb), int((d > 0).sum()), int((d < 0).sum()), test_name(len(seeds)),
    )  # fmt: skip


@dataclass(frozen=True)
class Ranks:
    """One row's place in its column from all pairwise tests (Holm over the k(k-1)/2 pairs)."""

    is_best: bool  # the highest mean accuracy of the column
    p_vs_best: float  # Holm-adjusted paired_p against the best row, same family (nan for the best row)
    rank_low: int  # 1 + the number of rows significantly better
    rank_high: int  # the number of rows not significantly worse

    @property
    def bold(self) -> bool:
        """No row is significantly better: the rank range starts at 1 (bold never contradicts the ranks)."""
        return self.rank_low == 1


def ranks(cells: dict[str, Runs], alpha: float = ALPHA) -> dict[str, Ranks]:
    """Every pair of the column's rows compared with :func:`paired_p`, Holm over all pairs, at ``alpha``.

    The family is all k(k-1)/2 pairs, whatever the data, so the chance that any row is wrongly
    ranked below another (hence wrongly not bold) is at most alpha when all rows are equally
    accurate. A significant pair's direction is the sign of the summed differences.
    """
    means = {name: float(m.mean()) for name, r in cells.items() if r and (m := run_matrix(r)).size}
    ranked = list(means)
    if not ranked:
        return {}
    best = max(ranked, key=lambda name: means[name])
    pairs = [(i, j) for k, i in enumerate(ranked) for j in ranked[k + 1 :]]
    tests = [paired(cells[i], cells[j], False) for i, j in pairs]
    adjusted = holm([t.p for t in tests])
    better = {name: 0 for name in ranked}  # rows significantly better than it
    worse = {name: 0 for name in ranked}  # rows significantly worse than it
    p_best = {}
    for (i, j), t, p in zip(pairs, tests, adjusted):
        if best in (i, j):
            p_best[j if i == best else i] = p
        if p < alpha:
            hi, lo = (i, j) if t.a_only > t.b_only else (j, i)
            better[lo] += 1
            worse[hi] += 1
    return {
        name: Ranks(name == best, p_best.get(name, math.nan), 1 + better[name], len(ranked) - worse[name]) for name in ranked
    }


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
    p_vs_best: float  # Holm-adjusted paired_p against the best row, family: all pairs (nan for the best row)
    tied_with_best: bool  # bold: no row significantly better (rank_low == 1)
    rank_low: int  # rank range from all pairwise tests (Holm over all pairs)
    rank_high: int


def run_matrix(r: Runs) -> np.ndarray:
    return aligned(r)[1][0]


def column_stats(cells: dict[str, Runs], alpha: float = ALPHA) -> dict[str, CellStats]:
    """Intervals, p-values against the best row, bold and rank ranges for one column's rows."""
    out = {}
    for name, r in ranks(cells, alpha).items():
        m = run_matrix(cells[name])
        low, high, method = accuracy_interval(list(m))
        out[name] = CellStats(float(m.mean()), low, high, method, m.shape[1], m.shape[0], r.is_best, r.p_vs_best, r.bold, r.rank_low, r.rank_high)
    return out
