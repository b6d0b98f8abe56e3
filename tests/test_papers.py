"""Paper tables: the renderer against fabricated results, and one-line reference parsing errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import ConfigError
from bench.plan.expand import expand
from bench.report.papers import (
    build_cells,
    latex_escape,
    leaderboard_ties,
    leaderboard_values,
    lpf_values,
    render_csv,
    render_latex,
    render_markdown,
)
from bench.report.rows import ResultRow
from bench.suite.load import load_suite
from bench.suite.paper import parse_paper
from tests.conftest import MINIMAL_SUITE, SUITES, write_suite

ROWS = ["pgd_at", "fr", "fr+wa"]
COLUMNS = ["FGSM", "PGD-20"]
PAPER = {
    "title": "Table 2 (100% & more)",
    "source": "a paper",
    "tolerance_pp": 1.0,
    "columns": [{"name": "Clean", "ours": "Clean"}, {"name": "PGD-20", "ours": "PGD-20"}, {"name": "C&W_x", "ours": "FGSM"}],
    "rows": [
        {"label": "PGD-AT", "ours": "pgd_at", "reported": {"Clean": 84.62, "PGD-20": 55.01}},
        {"label": "AT-FR", "ours": "fr", "reported": {"PGD-20": 59.49}},
        {"label": "AWP", "ours": None, "reported": {"Clean": 85.57}},
    ],
}


def tidy(display: str, seed: int, clean: float, pgd: float, fgsm: float) -> list[ResultRow]:
    base = {"display_name": display, "seed": seed, "clean_acc": clean, "clean_n": 100}
    return [ResultRow(**base, attack="PGD-20", robust_acc=pgd), ResultRow(**base, attack="FGSM", robust_acc=fgsm)]


@pytest.fixture
def table():
    spec = parse_paper(PAPER, "s.yaml: paper", ROWS, COLUMNS, [])
    rows = tidy("pgd_at", 0, 0.85, 0.5530, 0.61) + tidy("pgd_at", 1, 0.84, 0.5590, 0.60) + tidy("fr", 0, 0.80, 0.6100, 0.62)
    return spec, build_cells(spec, leaderboard_values(rows))


def test_cells_carry_mean_std_paper_delta_bold_and_flags(table) -> None:
    spec, cells = table
    at_pgd = cells[0][1]
    assert at_pgd.mean == pytest.approx(55.60) and at_pgd.std == pytest.approx(0.4243, abs=1e-4)
    assert at_pgd.delta == pytest.approx(0.59) and not at_pgd.bold  # fr is better on PGD-20
    assert cells[1][1].bold and cells[1][1].delta == pytest.approx(1.51)  # flagged: |1.51| > 1
    assert cells[0][0].bold and cells[0][0].mean == pytest.approx(84.5)
    assert cells[2][0].mean is None and cells[2][0].paper == 85.57  # a paper row we do not run
    assert cells[1][0].paper is None  # no published value


def test_markdown(table) -> None:
    spec, cells = table
    text = render_markdown(spec, cells, ["footer line"])
    lines = text.splitlines()
    assert lines[0] == "# Table 2 (100% & more)"
    assert "| Method | Clean | PGD-20 | C&W_x (FGSM) |" in lines  # filled from our FGSM column
    assert "| PGD-AT | **84.50** ± 0.71 / 84.62 (-0.12) | 55.60 ± 0.42 / 55.01 (+0.59) | 60.50 ± 0.71 / — |" in lines
    assert "| AT-FR | 80.00 / — | **61.00** / 59.49 (+1.51 ⚠) | **62.00** / — |" in lines
    assert "| AWP | — / 85.57 | — / — | — / — |" in lines
    assert lines[-1] == "footer line"


def test_bold_marks_every_row_no_row_is_significantly_better_than_on_per_sample_flags() -> None:
    spec = parse_paper(PAPER, "s.yaml: paper", ROWS, COLUMNS, [])
    ids = np.arange(200)
    fr_pgd, at_pgd = ids < 119, ids < 116  # the fr vs pgd_at: 119 vs 116, p = 0.25
    fr_fgsm, at_fgsm = ids < 150, ids < 100  # 50 discordant pairs, all one way
    outcomes = {
        ("fr", "PGD-20"): {0: (ids, fr_pgd)}, ("pgd_at", "PGD-20"): {0: (ids, at_pgd)},
        ("fr", "FGSM"): {0: (ids, fr_fgsm)}, ("pgd_at", "FGSM"): {0: (ids, at_fgsm)},
    }  # fmt: skip
    ties = leaderboard_ties(spec, outcomes)
    assert ties == {("fr", "PGD-20"): True, ("pgd_at", "PGD-20"): True, ("fr", "FGSM"): True, ("pgd_at", "FGSM"): False}
    values = {(row, col): [100 * flags.mean()] for (row, col), runs in outcomes.items() for flags in [runs[0][1]]}
    cells = build_cells(spec, values, ties)
    assert cells[0][1].bold and cells[1][1].bold  # PGD-20: 58.00 vs 59.50, tied
    assert cells[1][2].bold and not cells[0][2].bold  # C&W_x (our FGSM): fr significantly better
    assert not any(c.bold for c in (cells[0][0], cells[1][0]))  # Clean: no outcomes, nothing is bold
    assert "bold = every row no other row is significantly better than" in render_markdown(spec, cells, [])


def test_latex_structure_and_escaping(table) -> None:
    spec, cells = table
    text = render_latex(spec, cells, ["100% done & dusted"])
    assert "\\begin{tabular}{lccc}" in text and "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text
    assert "Table 2 (100\\% \\& more)" in text and "C\\&W\\_x" in text
    body = text[text.index("\\midrule") : text.index("\\bottomrule")].splitlines()[1:]
    assert len(body) == 3 and all(line.count(" & ") == 3 and line.endswith("\\\\") for line in body)
    assert "\\textbf{61.00} / 59.49 (+1.51)$^\\dagger$" in text
    assert "-- / 85.57" in text and "% 100% done & dusted" in text
    assert latex_escape("a_b^c~{}\\$#") == "a\\_b\\textasciicircum{}c\\textasciitilde{}\\{\\}\\textbackslash{}\\$\\#"


def test_csv_has_one_line_per_cell(table) -> None:
    spec, cells = table
    lines = render_csv(spec, cells).strip().splitlines()
    assert len(lines) == 1 + 3 * 3 and lines[0].startswith("row,input,column,ours_mean")


def test_lpf_layout_reads_low_pass_accuracies() -> None:
    raw = {
        "title": "t", "source": "s", "layout": "lpf",
        "columns": [{"name": "32", "ours": "b=32"}, {"name": "16", "ours": "b=16"}],
        "rows": [{"label": "Natural", "ours": "standard", "input": "adversarial", "reported": {"32": 0.0}}],
    }  # fmt: skip
    spec = parse_paper(raw, "s.yaml: paper", [], [], ["standard"])
    filtered = [
        {"pass": "low", "mask": "b=32", "clean_acc": 0.9, "adv_acc": 0.01},
        {"pass": "low", "mask": "b=16", "clean_acc": 0.5, "adv_acc": 0.3},
        {"pass": "high", "mask": "b=16", "clean_acc": 0.1, "adv_acc": 0.1},
    ]
    cells = build_cells(spec, lpf_values([{"display": "standard", "seed": 0, "metrics": {"filtered": filtered}}]))
    assert [c.mean for c in cells[0]] == [pytest.approx(1.0), pytest.approx(30.0)] and cells[0][0].delta == pytest.approx(1.0)


BASE = MINIMAL_SUITE.replace("[standard]", "[standard, pgd_at]")


@pytest.mark.parametrize(
    "paper, expected",
    [
        ("{title: t, source: s, columns: [Clean], rows: [{label: A, ours: pgd-at}]}", "paper.rows[0].ours: unknown row 'pgd-at' (did you mean 'pgd_at'?)"),
        ("{title: t, source: s, columns: [Clean], rows: [{label: A, ours: pgd_at, reported: {PGD: 1}}]}", "paper.rows[0].reported.PGD: unknown column 'PGD'"),
        ("{title: t, source: s, columns: [{name: P, ours: PGD-20}], rows: [{label: A}]}", "paper.columns[0].ours: unknown column 'PGD-20'"),
        ("{title: t, source: s, columns: [Clean], rows: [{label: A, ours: pgd_at, reported: {Clean: 1/0}}]}", "division by zero"),
        ("{title: t, columns: [Clean], rows: [{label: A}]}", "paper.source: missing"),
        ("{title: t, source: s, colums: [Clean], rows: []}", "did you mean 'columns'"),
    ],
)
def test_reference_errors_are_one_line(tmp_path: Path, paper: str, expected: str) -> None:
    path = write_suite(tmp_path / "p.yaml", BASE + f"paper: {paper}\n")
    with pytest.raises(ConfigError) as info:
        expand(load_suite(path))  # the planner checks the paper's rows and columns against the plan
    assert expected in str(info.value) and "\n" not in str(info.value) and str(path) in str(info.value)


def test_shipped_paper_suites_parse() -> None:
    table2 = expand(load_suite(SUITES / "papers" / "fr-aaai23-table2.yaml")).paper
    assert [r.label for r in table2.rows] == ["PGD-AT", "TRADES", "MART", "AWP", "AT-SWA", "AT-FR", "AT-FR-SWA"]
    assert table2.rows[-1].reported["AA"] == 54.35
    assert expand(load_suite(SUITES / "papers" / "fr-aaai23-table1-lpf.yaml")).paper.layout == "lpf"


def test_a_paper_table_renders_on_an_empty_cache_and_never_replaces_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from bench.commands.cli import main

    suite = str(SUITES / "papers" / "fr-aaai23-table2.yaml")
    report = ["report", suite, "--cache-dir", str(tmp_path / "empty"), "--results-dir", str(tmp_path / "r")]
    assert main(report) == 0
    out = capsys.readouterr().out
    written = tmp_path / "r" / "fr-aaai23-table2" / "paper.md"
    assert "| AT-FR | — / 80.59 | — / 61.47 | — / 59.49 | — / 54.33 | — / 52.06 |" in out and f"written: {written}" in out
    assert written.read_text() in out and sorted(p.name for p in written.parent.iterdir()) == ["paper.md"]
    assert main([*report, "--format", "latex"]) == 0 and "-- / 84.62" in (written.parent / "paper.tex").read_text()
    capsys.readouterr()
    # a folder that already holds results keeps them: the table is printed, nothing is written
    (written.parent / "results.json").write_text(json.dumps([{"display_name": "fr", "robust_acc": 0.5}]))
    written.unlink()
    assert main(report) == 0
    captured = capsys.readouterr()
    assert "— / 80.59" in captured.out and "written" not in captured.out and not written.exists()
    assert "not written" in captured.err and captured.err.count("\n") == 1
    # a suite without a paper table: nothing cached is still an error, nothing written
    assert main(["report", str(SUITES / "quickstart.yaml"), "--cache-dir", str(tmp_path / "empty"), "--results-dir", str(tmp_path / "q")]) == 1
    assert not (tmp_path / "q").exists()
