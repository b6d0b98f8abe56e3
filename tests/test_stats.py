"""Statistics against values computed independently: closed forms, direct binomial sums, scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from bench.core import stats

Z = sps.norm.ppf(0.975)


def wilson_by_roots(k: int, n: int) -> tuple[float, float]:
    """Wilson bounds as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, a quadratic in p."""
    ph, z2 = k / n, Z * Z
    lo, hi = sorted(np.roots([1 + z2 / n, -(2 * ph + z2 / n), ph * ph]).real)
    return lo, hi


@pytest.mark.parametrize(("k", "n"), [(120, 200), (0, 50), (50, 50), (7, 13), (1, 1000)])
def test_wilson_matches_its_closed_form_and_scipy(k: int, n: int) -> None:
    lo, hi = stats.wilson(k, n)
    assert (lo, hi) == pytest.approx(wilson_by_roots(k, n), abs=1e-9)
    ci = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_half_width_of_a_60_percent_cell_on_200_examples() -> None:
    lo, hi = stats.wilson(120, 200)
    wald = 100 * Z * math.sqrt(0.6 * 0.4 / 200)  # 6.79 pp: the "about ±6.8 pp"
    assert wald - 0.1 < 100 * (hi - lo) / 2 < wald  # Wilson is slightly narrower at p = 0.6
    assert all(math.isnan(v) for v in stats.wilson(0, 0))


def binomial_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value by a direct binomial sum."""
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize(("b", "c"), [(6, 0), (5, 0), (0, 6), (3, 0), (52, 5), (26, 17), (10, 10), (1, 0), (119, 116), (2500, 2600)])
def test_mcnemar_matches_a_direct_binomial_sum(b: int, c: int) -> None:
    p = stats.mcnemar_exact(b, c)
    assert p == pytest.approx(binomial_p(b, c), rel=1e-12)
    assert p == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_mcnemar_threshold_and_detectable_difference() -> None:
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(6, 0) == pytest.approx(2 / 64)  # 0.031 < 0.05
    assert stats.mcnemar_exact(5, 0) == pytest.approx(2 / 32)  # 0.0625: not significant
    assert stats.mcnemar_exact(3, 0) == pytest.approx(0.25)  # a 3-example lead can never reach p < 0.25
    assert stats.min_discordant(0.05) == 6 and stats.min_discordant(0.01) == 8
    assert stats.detectable_difference(200) == pytest.approx(0.03)
    assert stats.detectable_difference(200, 3) == pytest.approx(0.01)


def test_holm_on_hand_made_cases() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 1*0.04)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = stats.holm([0.02, math.nan, 0.01])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert stats.holm([0.04]) == [0.04]


def test_bootstrap_one_seed_converges_to_the_binomial_quantiles() -> None:
    # with one seed the bootstrap mean is Binomial(n, k/n) / n exactly; its percentiles are known
    n, k = 50, 30
    flags = np.r_[np.ones(k), np.zeros(n - k)]
    lo, hi = stats.bootstrap_interval(flags, n_boot=40000, seed=1)
    assert lo == pytest.approx(sps.binom.ppf(0.025, n, k / n) / n, abs=1 / n)
    assert hi == pytest.approx(sps.binom.ppf(0.975, n, k / n) / n, abs=1 / n)


def test_bootstrap_two_levels_on_fixed_flags() -> None:
    # seeds all-right and all-wrong: level 1 alone gives {0, 0.5, 1} with probabilities 1/4, 1/2, 1/4
    assert stats.bootstrap_interval([np.ones(30), np.zeros(30)], seed=3) == (0.0, 1.0)
    draws = stats.bootstrap_draws([np.ones(30), np.zeros(30)], n_boot=4000, seed=3)
    assert set(np.unique(draws)) == {0.0, 0.5, 1.0} and np.mean(draws == 0.5) == pytest.approx(0.5, abs=0.03)
    assert stats.bootstrap_interval(np.ones(10)) == (1.0, 1.0)
    # seeded: the same flags and seed give the same interval
    rng = np.random.default_rng(0)
    flags = rng.random((3, 200)) < 0.6
    assert stats.bootstrap_interval(flags, seed=5) == stats.bootstrap_interval(flags, seed=5)


def test_bootstrap_agrees_with_naive_index_resampling() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(300) < 0.6
    flags = np.stack([base ^ (rng.random(300) < p) for p in (0.05, 0.1, 0.2)])  # correlated seeds
    naive_rng = np.random.default_rng(123)
    draws = []
    for _ in range(4000):  # level 1: seeds with replacement; level 2: one example draw shared by the seeds
        seeds = naive_rng.integers(0, 3, size=3)
        examples = naive_rng.integers(0, 300, size=300)
        draws.append(flags[seeds][:, examples].mean())
    naive = np.quantile(draws, [0.025, 0.975])
    assert stats.bootstrap_interval(flags, seed=9) == pytest.approx(tuple(naive), abs=0.01)


def runs(*flags: np.ndarray, ids: np.ndarray | None = None) -> stats.Runs:
    ids = np.arange(len(flags[0])) if ids is None else ids
    return {seed: (ids, np.asarray(f, dtype=bool)) for seed, f in enumerate(flags)}


def test_paired_aligns_ids_and_tests_examples_summed_over_seeds() -> None:
    a = runs(np.array([1, 1, 0, 1]), np.array([1, 0, 0, 1]))
    # b lists the same examples in another order, and one extra example a never saw
    ids_b = np.array([3, 2, 1, 0, 9])
    b = runs(np.array([0, 0, 1, 1, 1]), np.array([1, 1, 0, 0, 1]), ids=ids_b)
    r = stats.paired(a, b)
    # b aligned to ids 0..3: seed 0 [1, 1, 0, 0], seed 1 [0, 0, 1, 1]
    # seed 0: a_only {3}, both right {0, 1}, both wrong {2}; seed 1: a_only {0}, b_only {2}, right {3}, wrong {1}
    assert (r.n, r.seeds) == (4, [0, 1])
    assert (r.a_only, r.b_only, r.both_right, r.both_wrong) == (2, 1, 3, 2)
    # per example, summed over seeds: id 0 +1, id 2 -1, id 3 +1: two examples favour a, one b
    assert r.p == pytest.approx(sign_flip_by_enumeration(np.array([1, -1, 1]))) and r.delta == pytest.approx(5 / 8 - 4 / 8)
    assert r.delta_low <= r.delta <= r.delta_high


def test_column_stats_marks_ties_with_holm_and_rank_ranges() -> None:
    n = 200
    best = np.zeros(n, bool)
    best[:120] = True
    close = best.copy()
    close[:3] = False  # 3 discordant, all one way: p = 0.25
    far = np.zeros(n, bool)
    far[:80] = True  # 40 discordant, all one way
    cells = {"close": runs(close), "best": runs(best), "far": runs(far)}
    out = stats.column_stats(cells)
    assert out["best"].is_best and out["best"].tied_with_best and math.isnan(out["best"].p_vs_best)
    p_close, p_far = binomial_p(3, 0), binomial_p(40, 0)
    p_close_far = binomial_p(37, 0)  # close (117 right) against far (80 right): 37 discordant, one way
    # Holm over all three pairs: p_far * 3, max(that, p_close_far * 2), max(that, p_close)
    assert out["close"].p_vs_best == pytest.approx(p_close)
    assert out["far"].p_vs_best == pytest.approx(3 * p_far)
    assert p_close_far > p_far and p_close > 2 * p_close_far
    assert out["close"].tied_with_best and not out["far"].tied_with_best
    assert (out["best"].rank_low, out["best"].rank_high) == (1, 2)
    assert (out["close"].rank_low, out["close"].rank_high) == (1, 2)
    assert (out["far"].rank_low, out["far"].rank_high) == (3, 3)
    lo, hi = stats.wilson(120, n)
    assert (out["best"].ci_low, out["best"].ci_high, out["best"].method) == (lo, hi, "wilson")
    assert out["best"].mean == pytest.approx(0.6) and out["best"].n == n


def test_column_stats_uses_the_bootstrap_with_several_seeds() -> None:
    rng = np.random.default_rng(1)
    flags = [rng.random(100) < 0.5 for _ in range(3)]
    out = stats.column_stats({"a": runs(*flags)})
    assert out["a"].method == "bootstrap" and out["a"].n_seeds == 3
    assert (out["a"].ci_low, out["a"].ci_high) == stats.bootstrap_interval(np.stack(flags).astype(float))


def seeds_matrix(d: np.ndarray, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Flags a, b over ``seeds`` seeds whose per-example difference summed over seeds is ``d``."""
    a, b = np.zeros((seeds, len(d)), bool), np.zeros((seeds, len(d)), bool)
    for i, x in enumerate(d):
        (a if x > 0 else b)[: abs(x), i] = True
    return a, b


def sign_flip_by_enumeration(d: np.ndarray) -> float:
    """P(|T'| >= |T|) over all 2^m sign flips of the nonzero d_i, by listing them."""
    v = np.abs(d[d != 0])
    if len(v) == 0:
        return 1.0
    signs = np.array(list(itertools.product([-1, 1], repeat=len(v))))
    return float(np.mean(np.abs(signs @ v) >= abs(d.sum())))


def test_paired_p_with_one_seed_is_the_exact_mcnemar_test() -> None:
    rng = np.random.default_rng(4)
    for n, p_a, p_b in [(200, 0.6, 0.6), (200, 0.6, 0.5), (50, 0.9, 0.2), (1000, 0.55, 0.53)]:
        a, b = rng.random(n) < p_a, rng.random(n) < p_b
        assert stats.paired_p(a, b) == stats.mcnemar_exact(*stats.discordant(a, b))  # identical, not approximately
        assert stats.paired_p(a[None], b[None]) == stats.paired_p(a, b)
    assert stats.paired_p(np.ones(5, bool), np.ones(5, bool)) == 1.0
    with pytest.raises(ValueError, match="same .seeds, examples. shape"):
        stats.paired_p(np.ones((2, 5), bool), np.ones((3, 5), bool))


def test_paired_p_with_several_seeds_is_the_exact_sign_flip_distribution() -> None:
    rng = np.random.default_rng(5)
    for _ in range(60):
        seeds = int(rng.integers(2, 6))
        d = rng.integers(-seeds, seeds + 1, size=int(rng.integers(1, 13)))
        a, b = seeds_matrix(d, seeds)
        assert stats.paired_p(a, b) == pytest.approx(sign_flip_by_enumeration(d), rel=1e-12, abs=1e-15)
    # d = (+2, +2, +1, -1): T = 4; |T'| >= 4 for (+,+,+,+-) and their negations: 6 of 16
    assert stats.paired_p(*seeds_matrix(np.array([2, 2, 1, -1]), 3)) == pytest.approx(6 / 16)


def test_copying_a_seed_leaves_paired_p_unchanged() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.random((2, 300)) < 0.6, rng.random((2, 300)) < 0.55
    for k in (2, 3, 5):
        assert stats.paired_p(np.repeat(a[:1], k, axis=0), np.repeat(b[:1], k, axis=0)) == stats.paired_p(a[:1], b[:1])
        assert stats.paired_p(np.tile(a, (k, 1)), np.tile(b, (k, 1))) == stats.paired_p(a, b)
    # the pooled McNemar over (seed, example) pairs that it replaces did not hold this
    only_a, only_b = stats.discordant(np.tile(a[0], 3), np.tile(b[0], 3))
    assert stats.mcnemar_exact(only_a, only_b) < stats.paired_p(a[0], b[0])


def test_no_difference_below_the_detectable_one_is_ever_significant() -> None:
    """Every multiset of per-example differences in +-1..3 over up to 9 examples (3 seeds): p < 0.05
    needs |sum d| >= 6 = min_discordant, i.e. an accuracy difference of 6 / (n * 3) at least."""
    smallest = math.inf
    for m in range(1, 10):
        for d in itertools.combinations_with_replacement([-3, -2, -1, 1, 2, 3], m):
            if stats.paired_p(*seeds_matrix(np.array(d), 3)) < 0.05:
                smallest = min(smallest, abs(sum(d)))
    assert smallest == stats.min_discordant(0.05) == 6


def test_paired_reports_the_test_it_made() -> None:
    a = runs(np.array([1, 1, 0, 1]), np.array([1, 0, 0, 1]))
    b = runs(np.array([0, 1, 0, 1]), np.array([0, 0, 0, 1]))
    r = stats.paired(a, b)
    assert r.test == stats.SIGN_FLIP and (r.favour_a, r.favour_b) == (1, 0) and r.p == 1.0
    one = stats.paired(runs(np.array([1, 1, 0, 1])), runs(np.array([0, 1, 0, 1])))
    assert one.test == "exact McNemar test" and one.p == stats.mcnemar_exact(1, 0)


def test_bold_follows_the_rank_range_where_the_best_row_rule_contradicted_it() -> None:
    ids = np.arange(200)
    a = ids < 120
    b = a.copy()
    b[:9], b[150] = False, True  # against a: 9 vs 1 discordant, p = 0.0195
    c = a.copy()
    c[10:13], c[160] = False, True  # against a: 3 vs 1, p = 0.625; against b: 4 vs 10, p = 0.18
    cells = {"a": runs(a), "b": runs(b), "c": runs(c)}
    p_ab = stats.mcnemar_exact(9, 1)
    # the rule it replaces: b against the best row a, Holm over the other two rows: 2 * 0.0195 < 0.05, not bold ...
    assert stats.holm([p_ab, stats.mcnemar_exact(3, 1)])[0] < 0.05
    # ... while all three pairwise tests (Holm over the 3 pairs: 3 * 0.0195 > 0.05) rank b anywhere in 1-3
    out = stats.column_stats(cells)
    assert [(out[r].rank_low, out[r].rank_high, out[r].tied_with_best) for r in "abc"] == [(1, 3, True)] * 3
    assert out["b"].p_vs_best == pytest.approx(3 * p_ab)


def test_compare_names_the_test_it_made(tmp_path) -> None:
    from bench.report.compare import comparison_text

    a = runs(np.array([1, 1, 0, 1]), np.array([1, 0, 0, 1]))
    b = runs(np.array([0, 1, 0, 1]), np.array([0, 0, 0, 1]))
    text = comparison_text("x", "y", "PGD-20", stats.paired(a, b))
    assert "exact sign-flip test over examples (seeds summed per example): 1 examples favour x, 0 favour y" in text
    assert "net +2 (seed, example) pairs), p = 1 (not significant at 0.05)" in text
    one = comparison_text("x", "y", "PGD-20", stats.paired(runs(np.array([1, 1, 0, 1])), runs(np.array([0, 1, 0, 1]))))
    assert "exact McNemar test: 1 vs 0 discordant, p = 1 (not significant at 0.05)" in one
