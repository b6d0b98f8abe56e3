"""The report page: written by a small real run, self-contained, escaped, and loaded in a real headless browser.

The browser is Debian's ``chromium-headless-shell`` (or ``chromium``); CI installs it (scripts/setup).
Without one the browser tests are skipped locally and fail when ``CI`` or ``BENCH_REQUIRE_CLUSTERS=1``
is set.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.commands.cli import main
from bench.report.html import markdown_html
from tests.conftest import ROOT, write_suite

SUITE = """\
name: page
dataset: {synthetic: {num_classes: 4, size: 12, n_train: 128, n_test: 32}}
model: {tiny_cnn: {width: 8}}
threat: {norm: Linf, eps: 24/255}
train: {epochs: 2, batch_size: 32, val_fraction: 0.25, selection: best_val, val_attack: {steps: 1}, schedule: {name: piecewise, milestones: [1]}}
defences: [standard, {pgd_at: {steps: 2}}]
attacks: [{pgd: {steps: 2}}]
eval: {n_examples: 32, batch_size: 32, eps: [8/255]}
seeds: [0]
wa: [none, swa]
analysis: {rows: [standard, pgd_at+wa], n_images: 8, heatmap_images: 2, attack_steps: 2}
paper:
  title: "Table <script>alert(1)</script> & co"
  source: "made up for the test"
  columns: [{name: Clean, ours: Clean}, {name: PGD, ours: PGD-2}]
  rows: [{label: "AT <b>bold</b>", ours: pgd_at, reported: {Clean: 90.0}}]
  note: "a note with <img src=x onerror=alert(2)>"
"""

# appended to a copy of the page: records whether every image decoded, and any script error
PROBE = """<script>
window.addEventListener("error", e => document.body.setAttribute("data-error", String(e.message)));
window.addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);
  document.body.setAttribute("data-images", decoded.length + "/" + images.length);
});
</script>"""


class Page(HTMLParser):
    """Tags of interest in a page: images, links, scripts, the leaderboard's body rows, section ids."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[str] = []
        self.hrefs: list[str] = []
        self.scripts = 0
        self.sections: list[str] = []
        self.board_rows: list[list[str]] = []
        self._board = self._body = self._cell = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag in ("a", "link"):
            self.hrefs.append(a.get("href", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "table":
            self._board = a.get("class") == "leaderboard"
        elif tag == "tbody":
            self._body = self._board
        elif tag == "tr" and self._body:
            self.board_rows.append([])
        elif tag == "td" and self._body:
            self._cell = True
            self.board_rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._board = self._body = False
        elif tag == "td":
            self._cell = False

    def handle_data(self, data):
        if self._cell:
            self.board_rows[-1][-1] += data


def browser() -> str | None:
    return next((p for name in ("chromium-headless-shell", "chromium") if (p := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = browser()
    if path is None:
        message = "no headless chromium found (apt-get install chromium-headless-shell)"
        if os.environ.get("CI") or os.environ.get("BENCH_REQUIRE_CLUSTERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def load(chromium: str, page: Path, tmp: Path) -> tuple[str, str]:
    """(DOM after the load event, browser log) of a copy of ``page`` alone in an empty folder, with ``PROBE``."""
    folder = tmp / "alone"
    folder.mkdir()
    probe = folder / "index.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout, done.stderr


def assert_renders(chromium: str, page: Path, tmp: Path, n_rows: int) -> None:
    dom, log = load(chromium, page, tmp)
    n_images = len(Page(page.read_text()).images)
    assert n_images > 0
    assert f'data-images="{n_images}/{n_images}"' in dom  # every figure decoded, from the page alone
    assert 'data-error="' not in dom
    assert len(Page(dom).board_rows) == n_rows
    problems = [line for line in log.splitlines() if ":CONSOLE" in line or "net::ERR" in line or "Uncaught" in line]
    assert not problems, problems


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("page")
    suite = write_suite(base / "page.yaml", SUITE)
    args = ["--cache-dir", str(base / "cache"), "--results-dir", str(base / "results")]
    assert main(["run", str(suite), *args, "--device", "cpu", "--quiet"]) == 0
    return base


def test_run_writes_a_self_contained_page_with_every_part(run: Path) -> None:
    out = run / "results" / "page"
    text = (out / "index.html").read_text()
    page = Page(text)
    assert page.sections == ["leaderboard", "flags", "curves", "analysis", "paper", "provenance", "cost"]
    assert page.scripts == 0 and all(h.startswith("#") for h in page.hrefs)  # nothing to fetch, nothing to run
    assert "http://" not in text and "https://" not in text
    figures = ["training_curves.png", "robustness_curve.png"]
    figures += re.findall(r"^- \[([\w.-]+\.png)\]", (out / "analysis" / "README.md").read_text(), re.MULTILINE)
    figures = [out / f if f.startswith(("training", "robustness")) else out / "analysis" / f for f in figures]
    assert len(figures) == 2 + 4  # curves; heat map, PGD-2 spectrum, amplitude change, radial profiles
    embedded = [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images]
    assert embedded == [f.read_bytes() for f in figures]  # each figure, as written beside the page
    board = [line for line in (out / "leaderboard.md").read_text().splitlines() if line.startswith("|")][2:]
    cells = [[c.strip().replace("**", "") for c in line.strip("|").split("|")] for line in board]
    assert page.board_rows == cells  # the Markdown leaderboard's rows: ranks, intervals, order
    assert sorted(row[1] for row in cells) == ["pgd_at", "pgd_at+wa", "standard", "standard+wa"]
    assert text.count("<strong>") >= sum(line.count("**") for line in board) // 2  # the tie marks
    assert "git_sha" in text and "suite digest" in text and "training (s)" in text


def test_user_text_is_escaped(run: Path) -> None:
    text = (run / "results" / "page" / "index.html").read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(2)&gt;" in text
    assert markdown_html("- [x](javascript:alert(1)) `<i>` **<u>**", run) == "<ul><li>[x](javascript:alert(1)) <code>&lt;i&gt;</code> <strong>&lt;u&gt;</strong></li></ul>"


def test_report_rerenders_the_same_page(run: Path) -> None:
    out = run / "results" / "page"
    before = {p.name: p.read_bytes() for p in [out / "index.html", *(out / "analysis").glob("*.pdf")]}
    args = ["--cache-dir", str(run / "cache"), "--results-dir", str(run / "results")]
    assert main(["report", str(run / "page.yaml"), *args]) == 0
    assert {p.name: p.read_bytes() for p in [out / "index.html", *(out / "analysis").glob("*.pdf")]} == before


def test_a_rerun_that_computes_nothing_leaves_figures_and_page_alone_until_results_change(run: Path) -> None:
    out = run / "results" / "page"
    drawn = [out / "index.html", out / "training_curves.png", *(out / "analysis").glob("*.p*")]
    args = ["run", str(run / "page.yaml"), "--cache-dir", str(run / "cache"), "--results-dir", str(run / "results"), "--quiet"]
    for p in drawn:
        os.utime(p, ns=(1, 1))  # a mark any rewrite would remove
    assert main([*args, "--device", "cpu"]) == 0
    assert all(p.stat().st_mtime_ns == 1 for p in drawn)  # nothing re-drawn: the re-run stays within seconds
    assert '"evaluated": 0' in (out / "run.json").read_text()  # while run.json records this run
    (out / "results.json").write_text("[]\n")  # results on disk that are not the cache's: render again
    assert main([*args, "--device", "cpu"]) == 0
    assert all(p.stat().st_mtime_ns != 1 for p in drawn) and (out / "results.json").read_text() != "[]\n"


def test_page_renders_in_a_headless_browser(run: Path, chromium: str, tmp_path: Path) -> None:
    assert_renders(chromium, run / "results" / "page" / "index.html", tmp_path, n_rows=4)


def test_the_probe_sees_a_broken_figure_and_a_console_message(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,iVBORw0KGgo="><script>console.log("x")</script></body></html>')
    dom, log = load(chromium, page, tmp_path)
    assert 'data-images="0/1"' in dom and ":CONSOLE" in log


def test_committed_quickstart_page_renders_in_a_headless_browser(chromium: str, tmp_path: Path) -> None:
    page = ROOT / "results" / "quickstart" / "index.html"
    assert_renders(chromium, page, tmp_path, n_rows=10)
    shot = tmp_path / "shot.png"
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p2'}",
            "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()]  # fmt: skip
    subprocess.run(args, capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # text and figures, not blank
