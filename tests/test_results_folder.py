"""One results-folder writer (``bench/report/folder.py``) for ``bench run`` and ``bench report``, and a suite
planned once by ``bench run``; on the committed smoke cache (everything cached: nothing is computed)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import bench.api.run
import bench.plan.expand
from bench.api.run import run_suite
from bench.commands.cli import main
from bench.core.errors import BenchError
from bench.suite.load import load_suite
from tests.test_golden_report import GOLDEN, SUITE, TEXT, normalise

ROOT = Path(__file__).resolve().parent


def test_bench_run_plans_once_and_writes_the_folder_bench_report_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(GOLDEN / "cache", tmp_path / "cache")
    plans = []
    real = bench.plan.expand.expand

    def counted(*args, **kwargs):
        plans.append(args[0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench.plan.expand, "expand", counted)
    monkeypatch.setattr(bench.api.run, "expand", counted)
    args = ["--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results"), "--device", "cpu", "--quiet"]
    assert main(["run", str(SUITE), *args]) == 0
    assert plans == ["smoke"]  # the CLI's plan (needed before the dry run) is the one run_suite runs
    out = tmp_path / "results" / "smoke"
    expected = GOLDEN / "out"
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name.endswith(TEXT))
    # run.json (this run's counters) is bench run's own; the page shows it, so it is compared with report's below
    assert written == sorted([*(str(p.relative_to(expected)) for p in expected.rglob("*") if p.is_file() and p.name != "SHA256SUMS"), "run.json"])
    for name in (n for n in written if n not in ("run.json", "index.html")):
        assert (out / name).read_bytes() == (expected / name).read_bytes(), name
    page = normalise("index.html", (out / "index.html").read_bytes()).decode()
    # the page of a run also shows run.json: its table and the run's total seconds; the rest is report's page
    head, rest = page.split("<h3>Last run (<code>run.json</code>)</h3>\n")
    rest = rest[rest.index("</table></div>\n") + len("</table></div>\n") :]
    assert re.search(r" The last run took \d+ s in all \(cached tasks cost nothing\)\.", rest)
    rest = re.sub(r" The last run took \d+ s in all \(cached tasks cost nothing\)\.", "", rest)
    assert head + rest == (expected / "index.html").read_text()


def test_run_suite_refuses_a_plan_of_another_suite(tmp_path: Path) -> None:
    suite = load_suite(SUITE)
    other = bench.plan.expand.expand(load_suite(SUITE))
    with pytest.raises(BenchError, match="plan= was expanded from suite 'smoke', not from the suite given"):
        run_suite(suite, tmp_path / "cache", tmp_path / "results", "cpu", plan=other, progress=False)
