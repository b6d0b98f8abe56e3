"""The text of ``bench compare`` (the command: ``bench/commands/compare.py``): two rows, paired.

The 2x2 table of per-sample outcomes over the examples (and seeds) both rows were evaluated on, the
accuracy difference with its 95 % interval (paired two-level bootstrap over seeds and examples,
``bench/core/stats.py``) and the p-value of ``stats.paired_p``, naming the test it made: the exact
McNemar test with one seed, the exact sign-flip test over examples (each example's differences
summed over the seeds) with several.
"""

from __future__ import annotations

from bench.core.stats import Paired


def comparison_text(row_a: str, row_b: str, column: str, result: Paired) -> str:
    """The 2x2 table, the difference with its interval and the p-value, as printed."""
    if result.n == 0:
        return f"{row_a} and {row_b} have no common seeds and examples on {column}"
    width = max(len(row_a), len(row_b)) + 8
    cell = len(row_b) + 9
    lines = [
        f"{column}: {row_a} vs {row_b} on {result.n} common test examples x {len(result.seeds)} seed(s) "
        f"({', '.join(map(str, result.seeds))})",
        "",
        f"{'':<{width}}{row_b + ' right':>{cell}}{row_b + ' wrong':>{cell}}",
        f"{row_a + ' right':<{width}}{result.both_right:>{cell}}{result.a_only:>{cell}}",
        f"{row_a + ' wrong':<{width}}{result.b_only:>{cell}}{result.both_wrong:>{cell}}",
        "",
        f"accuracy: {row_a} {100 * result.acc_a:.2f} %, {row_b} {100 * result.acc_b:.2f} %",
        f"difference {row_a} - {row_b}: {100 * result.delta:+.2f} pp, 95 % interval "
        f"[{100 * result.delta_low:+.2f}, {100 * result.delta_high:+.2f}] (paired bootstrap over seeds and examples)",
        f"{result.test}: {_evidence(row_a, row_b, result)}, p = {result.p:.4g}" + (" (not significant at 0.05)" if result.p >= 0.05 else ""),
    ]
    return "\n".join(lines)


def _evidence(row_a: str, row_b: str, result: Paired) -> str:
    """What the test counted: discordant examples (one seed) or examples favouring each row (several)."""
    if len(result.seeds) == 1:
        return f"{result.a_only} vs {result.b_only} discordant"
    return (f"{result.favour_a} examples favour {row_a}, {result.favour_b} favour {row_b} "
            f"(net {result.a_only - result.b_only:+d} (seed, example) pairs)")  # fmt: skip
