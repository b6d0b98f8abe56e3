"""``bench compare SUITE ROW_A ROW_B [--column C]``: two leaderboard rows, paired, from the cache.

Prints the 2x2 table of per-sample outcomes over the examples (and seeds) both rows were evaluated
on, the accuracy difference with its 95 % interval and the p-value of ``stats.paired_p``
(``bench/report/compare.py`` lays it out). Nothing is computed but statistics.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from bench.commands.options import command_parser
from bench.core.errors import ConfigError
from bench.core.stats import paired
from bench.report.compare import comparison_text

EXAMPLES = """examples:
  bench compare suites/quickstart.yaml fr pgd_at                 # on the worst case
  bench compare suites/quickstart.yaml fr pgd_at --column PGD-20"""


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "compare", "paired comparison of two leaderboard rows (2x2 table, difference, exact paired p)", EXAMPLES)
    p.add_argument("suite", type=Path, help="suite YAML file")
    p.add_argument("row_a", help="leaderboard row, e.g. fr+wa")
    p.add_argument("row_b", help="leaderboard row to compare with")
    p.add_argument("--column", default="Worst case", help="Clean, an attack column (e.g. PGD-20) or 'Worst case' (default)")
    p.add_argument("--cache-dir", type=Path, default=None, help="artefact cache (default: $BENCH_CACHE or ~/.cache/bench)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="the --limit the suite was run with")
    p.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE", help="the --set overrides the suite was run with (repeatable)")


def _choose(where: str, what: str, value: str, known: list[str]) -> str:
    if value not in known:
        close = difflib.get_close_matches(value, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(where, f"no {what} {value!r}{hint}; known: {', '.join(known) or 'none evaluated yet'}")
    return value


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.core.files import default_cache_dir
    from bench.engine.store import Store
    from bench.plan.expand import expand
    from bench.report.aggregate import collect_outcomes
    from bench.suite.load import load_suite

    plan = expand(load_suite(args.suite, args.set), args.limit)
    _, outcomes = collect_outcomes(plan, Store(args.cache_dir or default_cache_dir()))
    rows = list(dict.fromkeys(row for row, _ in outcomes))
    columns = list(dict.fromkeys(col for _, col in outcomes))
    row_a = _choose(f"{args.suite}: ROW_A", "evaluated row", args.row_a, rows)
    row_b = _choose(f"{args.suite}: ROW_B", "evaluated row", args.row_b, rows)
    column = _choose(f"{args.suite}: --column", "evaluated column", args.column, columns)
    missing = [r for r in (row_a, row_b) if (r, column) not in outcomes]
    if missing:
        raise ConfigError(f"{args.suite}: --column", f"{column!r} is not evaluated yet for {missing[0]!r}")
    print(comparison_text(row_a, row_b, column, paired(outcomes[(row_a, column)], outcomes[(row_b, column)])))
    return 0
