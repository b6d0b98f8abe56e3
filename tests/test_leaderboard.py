"""The leaderboard from fabricated per-sample outcomes: intervals, ties, rank ranges, cost column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import ConfigError
from bench.core.stats import wilson
from bench.plan.expand import expand
from bench.report.aggregate import add_cell_stats
from bench.report.render import leaderboard_latex, leaderboard_markdown
from bench.report.rows import CLEAN, WORST, ResultRow
from bench.suite.load import load_suite
from tests.conftest import MINIMAL_SUITE, write_suite

N = 200
IDS = np.arange(N)


def first(k: int) -> np.ndarray:
    return IDS < k


# row -> (clean correct, FGSM robust, train seconds, eval seconds)
FABRICATED = {
    "standard": (first(190), first(20), 10.0, 1.0),
    "pgd_at": (first(160), first(119), 40.0, 2.0),
    "trades": (first(158), first(116), 50.0, 3.0),  # 3 discordant behind pgd_at: tied
}


def fabricated(tmp_path: Path, extra: str = "") -> tuple:
    text = MINIMAL_SUITE.replace("[standard]", "[standard, pgd_at, trades]") + extra
    plan = expand(load_suite(write_suite(tmp_path / "s.yaml", text)))
    rows, outcomes = [], {}
    for name, (clean, fgsm, train_s, eval_s) in FABRICATED.items():
        base = {"display_name": name, "seed": 0, "clean_acc": clean.mean(), "clean_n": N, "train_seconds": train_s,
                "provenance": {"device": "cpu (test)"}}  # fmt: skip
        rows += [ResultRow(**base, attack="FGSM", robust_acc=fgsm.mean(), n=N, eval_seconds=eval_s), ResultRow(**base, attack=WORST, robust_acc=fgsm.mean(), n=N)]
        outcomes[(name, CLEAN)] = {0: (IDS, clean)}
        outcomes[(name, "FGSM")] = outcomes[(name, WORST)] = {0: (IDS, fgsm)}
    return plan, add_cell_stats(rows, outcomes)


def table_lines(board: str) -> dict[str, list[str]]:
    out = {}
    for line in board.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and cells[1] in FABRICATED:
            out[cells[1]] = cells
    return out


def test_ties_rank_ranges_and_intervals_on_fabricated_results(tmp_path: Path) -> None:
    plan, rows = fabricated(tmp_path)
    board = leaderboard_markdown(plan, rows)
    lines = table_lines(board)
    lo, hi = wilson(119, N)
    assert lines["pgd_at"] == ["1–2", "pgd_at", f"80.00 [{100 * wilson(160, N)[0]:.1f}, {100 * wilson(160, N)[1]:.1f}]",
                               f"**59.50** [{100 * lo:.1f}, {100 * hi:.1f}]", f"**59.50** [{100 * lo:.1f}, {100 * hi:.1f}]"]  # fmt: skip
    assert lines["trades"][0] == "1–2" and lines["trades"][3].startswith("**58.00** [")  # 3 examples behind: tied
    assert lines["standard"][0] == "3" and lines["standard"][2].startswith("**95.00**") and lines["standard"][3].startswith("10.00 [")
    order = [line for line in board.splitlines() if line.startswith("|") and any(f"| {r} " in line for r in FABRICATED)]
    assert [next(r for r in FABRICATED if f"| {r} " in line) for line in order] == ["pgd_at", "trades", "standard"]
    assert "differences below 3.00 pp can never be significant" in board and "Cost" not in board
    by_key = {(r.display_name, r.attack): r for r in rows}
    assert by_key[("trades", "FGSM")].cell.tied_with_best and not by_key[("standard", "FGSM")].cell.tied_with_best
    # Holm over {trades: 0.25, standard: ~0}: standard is adjusted by 2, trades (the largest) by 1
    assert by_key[("trades", "FGSM")].cell.p_vs_best == pytest.approx(0.25)
    assert by_key[("pgd_at", "FGSM")].clean_cell.p_vs_best > 0 and by_key[("standard", "FGSM")].clean_cell.is_best
    record = by_key[("trades", "FGSM")].record()  # results.json's columns: the cell's statistics, then the Clean cell's
    assert record["p_vs_best"] == pytest.approx(0.25) and record["clean_is_best"] is False and record["device"] == "cpu (test)"


def test_latex_leaderboard_bolds_ties_and_escapes_names(tmp_path: Path) -> None:
    plan, rows = fabricated(tmp_path)
    lines = leaderboard_latex(plan, rows).splitlines()
    assert "\\toprule" in lines and "\\bottomrule" in lines and "Rank & Defence & Clean & FGSM & Worst case \\\\" in lines
    trades = next(line for line in lines if "trades" in line)
    assert trades.startswith("1--2 & trades & 79.00 [") and "\\textbf{58.00} [" in trades
    assert any(line.startswith("3 & standard & \\textbf{95.00}") for line in lines)
    assert any(line.startswith("1--2 & pgd\\_at & ") for line in lines)


def test_cost_column_is_optional(tmp_path: Path) -> None:
    plan, rows = fabricated(tmp_path, "leaderboard: {cost: true}\n")
    board = leaderboard_markdown(plan, rows)
    assert "Cost (s)" in board and "cpu (test)" in board
    assert table_lines(board)["trades"][-1] == "50 + 3"


def test_leaderboard_key_is_strict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"leaderboard\.cots: .*did you mean 'cost'"):
        load_suite(write_suite(tmp_path / "s.yaml", MINIMAL_SUITE + "leaderboard: {cots: true}\n"))


def test_header_states_the_test_and_the_detectable_difference_of_several_seeds(tmp_path: Path) -> None:
    from bench.report.render import uncertainty_lines

    plan = expand(load_suite(write_suite(tmp_path / "s.yaml", MINIMAL_SUITE + "seeds: [0, 1, 2]\n")))
    text = "\n".join(uncertainty_lines(plan, 200))
    assert "exact sign-flip test over the common test examples, each example's differences summed over the seeds" in text
    assert "family: all k(k−1)/2 pairs of rows within a column, Holm-corrected" in text and "rank range starts at 1" in text
    # 6 examples, one way: 6 / (200 x 3) = 1 pp when each differs on one seed, 6 / 200 = 3 pp on every seed
    assert "differences below 1.00 pp (6 examples differing on one seed each)" in text and "below 3.00 pp when the rows" in text
    one = "\n".join(uncertainty_lines(expand(load_suite(write_suite(tmp_path / "t.yaml", MINIMAL_SUITE))), 200))
    assert "exact McNemar test on the per-sample flags" in one and "differences below 3.00 pp can never be significant" in one
