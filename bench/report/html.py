"""``<results>/<suite>/index.html``: one self-contained page with a suite's results.

The page holds the leaderboard (the rows of ``bench/report/render.py``, with their intervals, tie marks
and ranks, and the notes and sanity flags of ``leaderboard.md``), the training and robustness
curves, the spectral analysis (``analysis/README.md`` with its figures), the paper table when the
suite has ``paper:``, provenance (suite file and digest, versions, devices, the last run's
``run.json``) and cost. Figures are embedded as ``data:`` PNG URIs and the CSS is inline, so the
file can be mailed or archived alone: nothing is fetched from the network and there is no script.
Every piece of text is HTML-escaped (suite, row and paper labels are user input).

Written by ``bench run``, ``bench analyze`` and ``bench report`` after the other result files.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.core.files import atomic_write_text
from bench.core.plotting import DPI
from bench.plan.tasks import Plan
from bench.report.render import MISSING, leaderboard_markdown, leaderboard_rows
from bench.report.rows import ResultRow

BOLD = ("\x02", "\x03")  # tie marks from leaderboard_rows, turned into <strong> after escaping
CURVES = {
    "training_curves.png": "Validation accuracy per epoch of every leaderboard row: robust (solid) and clean (dashed) per seed; "
    "★ = the checkpoint the suite selected. Numbers: training_curves.csv.",
    "robustness_curve.png": "Worst-case robust accuracy versus ε (the suite's radius and its eval.eps radii) with the 95 % interval "
    "as a band. Numbers: robustness_curve.csv.",
}
FIGURE_LINE = re.compile(r"^- \[([^\]]+)\]\(([\w./-]+\.png)\)(?: \(\[PDF\]\(([\w./-]+\.pdf)\)\))?: (.*)$")
LINK = re.compile(r"\[([^\]]+)\]\(([\w./#-]+)\)")  # relative links only: no scheme, so no javascript:
PROVENANCE_KEYS = ("bench", "git_sha", "torch", "python", "numpy", "cuda", "device", "eval_device")

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1b1b1b; background: #fff; max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.7rem; margin: 0 0 .2rem; }
h2 { font-size: 1.35rem; margin: 2.2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 1px solid #d0d0d0; }
h3 { font-size: 1.12rem; margin: 1.4rem 0 .4rem; }
h4 { font-size: 1rem; margin: 1.2rem 0 .3rem; }
nav { margin: .6rem 0 1rem; } nav a { margin-right: 1.1rem; }
a { color: #1f5fa8; }
ul { padding-left: 1.4rem; } li { margin: .15rem 0; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: .88rem; font-variant-numeric: tabular-nums; margin: .5rem 0 1rem; }
th, td { padding: .28rem .6rem; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; border-bottom: 2px solid #b8b8b8; }
tbody tr:nth-child(even) { background: #fafafa; }
.num { text-align: right; }
td.num { white-space: nowrap; }
.center { text-align: center; }
.ci { color: #666; font-size: .88em; }
table.kv th { font-weight: normal; color: #444; padding-right: 1.2rem; }
table.leaderboard strong { color: #000; }
figure { margin: 1rem 0 1.6rem; break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .86rem; color: #444; margin-top: .3rem; max-width: 70rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em;
       background: #f2f2f2; padding: 0 .25em; border-radius: 3px; }
.muted { color: #666; }
.flag { color: #8a4b00; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav { display: none; }
  h2 { break-after: avoid; }
  table, figure { break-inside: avoid; }
  .wide { overflow: visible; }
  a { color: inherit; text-decoration: none; }
  tbody tr:nth-child(even) { background: none; }
}
"""


# ---------------------------------------------------------------- Markdown (our own files) -> HTML


def inline(text: str) -> str:
    """Escaped text with ``code``, **bold**, relative links and the leaderboard's tie marks as HTML."""
    out = html.escape(text, quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = LINK.sub(r'<a href="\2">\1</a>', out)
    return out.replace(BOLD[0], "<strong>").replace(BOLD[1], "</strong>")


def _align(cell: str) -> str:
    cell = cell.strip()
    if cell.startswith(":") and cell.endswith(":"):
        return "center"
    return "num" if cell.endswith(":") else ""


def _class(name: str) -> str:
    return f' class="{name}"' if name else ""


def table_html(headers: list[str], rows: list[list[str]], align: list[str], cls: str = "") -> str:
    """A table of Markdown-inline cells; ``align`` holds a CSS class per column (``num``, ``center`` or "")."""

    def cell(tag: str, text: str, a: str) -> str:
        body = re.sub(r" (\[[^\]]*\])$", r' <span class="ci">\1</span>', inline(text))  # a cell's interval, in grey
        return f"<{tag}{_class(a)}>{body}</{tag}>"

    head = "".join(cell("th", h, a) for h, a in zip(headers, align))
    body = "".join("<tr>" + "".join(cell("td", c, a) for c, a in zip(row, align)) + "</tr>\n" for row in rows)
    return f'<div class="wide"><table{_class(cls)}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>'


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG header, or None when ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def figure_html(png: Path, caption: str) -> str:
    """A ``<figure>`` with ``png`` embedded as a data URI (the PDF beside it is named in the caption)."""
    data = png.read_bytes() if png.is_file() else b""
    size = png_size(data)
    if size is None:
        return f'<p class="flag">Figure {html.escape(png.name)} is missing or not a PNG.</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    size = tuple(round(n * 100 / DPI) for n in size)  # shown at 100 dpi: sharp on high-density screens
    files = png.name + (f", {png.with_suffix('.pdf').name}" if png.with_suffix(".pdf").is_file() else "")
    return (
        f'<figure><img src="{uri}" width="{size[0]}" height="{size[1]}" alt="{html.escape(png.stem, quote=True)}">'
        f'<figcaption>{inline(caption)} <span class="muted">({html.escape(files)})</span></figcaption></figure>'
    )


def _inside(base: Path, rel: str) -> Path | None:
    path = (base / rel).resolve()
    return path if path.is_relative_to(base.resolve()) else None


def markdown_html(text: str, base: Path, shift: int = 0) -> str:
    """The Markdown that bench writes (headings, bullets, pipe tables, lines) as HTML, all text escaped.

    A bullet ``- [x.png](x.png) ([PDF](x.pdf)): caption`` becomes a figure embedded from ``base``;
    headings move ``shift`` levels down; consecutive lines of a paragraph keep their line breaks.
    """
    blocks: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif m := re.match(r"^(#{1,6}) (.*)$", line):
            level = min(len(m.group(1)) + shift, 6)
            blocks.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            align = [_align(c) for c in rows[1]] if len(rows) > 1 and all(set(c) <= set(":-") for c in rows[1]) else None
            body = rows[2:] if align else rows[1:]
            blocks.append(table_html(rows[0], body, align or [""] * len(rows[0])))
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                fig = FIGURE_LINE.match(lines[i])
                png = _inside(base, fig.group(2)) if fig else None
                if png is not None:
                    if items:
                        blocks.append("<ul>" + "".join(items) + "</ul>")
                        items = []
                    blocks.append(figure_html(png, fig.group(4)))
                else:
                    items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            if items:
                blocks.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#{1,6} |\||- )", lines[i]):
                para.append(inline(lines[i]))
                i += 1
            blocks.append("<p>" + "<br>\n".join(para) + "</p>")
    return "\n".join(blocks)


# ---------------------------------------------------------------- sections


def _leaderboard(plan: Plan, rows: Sequence[ResultRow], out: Path) -> tuple[str, str]:
    """(leaderboard section, flags section): the table from ``leaderboard_rows``, the text of ``leaderboard.md``."""
    headers, body = leaderboard_rows(plan, rows, plan.suite.leaderboard.cost, bold=BOLD)
    align = ["num", ""] + ["num"] * (len(headers) - 2)
    lines = leaderboard_markdown(plan, rows).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    notes = markdown_html("\n".join(lines[1:start]), out)  # without the "# Leaderboard" title
    after = "\n".join(lines[end:]).strip()
    board = f'<section id="leaderboard"><h2>Leaderboard</h2>\n{notes}\n{table_html(headers, body, align, "leaderboard")}\n</section>'
    flags = markdown_html(after, out, shift=1) if after else "<p>No sanity or training-health flag was raised on any result.</p>"
    run = _run_json(out)
    failed = run.get("failed") or 0
    logs = sorted(p.name for p in (out / "logs").glob("*")) if (out / "logs").is_dir() else []
    if failed:
        flags += f'\n<p class="flag">The last run reported {int(failed)} failed task(s); tracebacks in <code>logs/</code>.</p>'
    if logs:
        flags += "\n<p>Task logs: " + ", ".join(f"<code>logs/{html.escape(n)}</code>" for n in logs) + "</p>"
    return board, f'<section id="flags"><h2>Flags and health</h2>\n{flags}\n</section>'


def _corruptions(out: Path) -> str:
    """``corruptions.md`` (every corruption and severity, the CE per corruption) as a section, when the suite has corruption columns."""
    path = out / "corruptions.md"
    if not path.is_file():
        return ""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("# "))
    return f'<section id="corruptions"><h2>Corruptions</h2>\n{markdown_html(text, out)}\n</section>'


def _curves(out: Path) -> str:
    figures = [figure_html(out / name, caption) for name, caption in CURVES.items() if (out / name).is_file()]
    return f'<section id="curves"><h2>Training and robustness curves</h2>\n{"".join(figures)}\n</section>' if figures else ""


def _analysis(out: Path) -> str:
    index = out / "analysis" / "README.md"
    if not index.is_file():
        return ""
    text = "\n".join(line for line in index.read_text().splitlines() if not line.startswith("# "))
    return f'<section id="analysis"><h2>Spectral analysis</h2>\n{markdown_html(text, out / "analysis", shift=1)}\n</section>'


def _paper(paper_md: str | None, out: Path) -> str:
    if not paper_md:
        return ""
    return f'<section id="paper"><h2>Paper table</h2>\n{markdown_html(paper_md, out, shift=2)}\n</section>'


def _run_json(out: Path) -> dict[str, Any]:
    try:
        run = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return run if isinstance(run, dict) else {}


def _key_values(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f'<tr><th scope="row">{inline(k)}</th><td>{inline(v if isinstance(v, str) else json.dumps(v))}</td></tr>\n' for k, v in items)
    return f'<div class="wide"><table class="kv">\n<tbody>\n{rows}</tbody></table></div>'


def _provenance(plan: Plan, rows: Sequence[ResultRow], out: Path) -> str:
    from bench.core.version import __version__
    from bench.device.env import git_sha

    suite = plan.suite
    path = suite.path
    try:
        path = path.resolve().relative_to(Path.cwd())
    except (ValueError, OSError):
        pass
    about = [
        ("suite file", f"`{path}`"),
        ("suite digest (sha256 of the file and its includes)", f"`{suite.digest}`"),
        ("regenerate this page from the cache", f"`bench report {path}`"),
    ]
    versions = []
    for key in PROVENANCE_KEYS:
        values = sorted({str(v) for v in (_version(r, key) for r in rows) if v not in (None, "")})
        if values:
            versions.append((key, "; ".join(values)))
    sha = git_sha()
    rendered = f"bench {__version__}" + (f" (git {sha[:10]})" if sha else "")
    run = _run_json(out)
    parts = [
        "<h3>Suite</h3>",
        _key_values(about),
        "<h3>Software and hardware of the results</h3>",
        _key_values(versions) if versions else "<p>No result carries provenance yet.</p>",
        f'<p class="muted">Page rendered by {html.escape(rendered)} from the cache.</p>',
    ]
    if run:
        parts += ["<h3>Last run (<code>run.json</code>)</h3>", _key_values(sorted(run.items()))]
    return '<section id="provenance"><h2>Provenance</h2>\n' + "\n".join(parts) + "\n</section>"


def _seconds(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _version(row: ResultRow, key: str) -> Any:
    """A provenance value of a row: where its evaluation ran, or what its training recorded."""
    return row.eval_device if key == "eval_device" else row.provenance.get(key)


def _cost(plan: Plan, rows: Sequence[ResultRow], out: Path) -> str:
    """Training and evaluation seconds per leaderboard row (mean over seeds), and the last run's wall time."""
    table = []
    for display in dict.fromkeys(j.display for j in plan.eval_jobs):
        mine = [r for r in rows if r.display_name == display and not r.synthesised]
        seeds = sorted({r.seed for r in mine})
        train = [next(r.train_seconds for r in mine if r.seed == s) or 0.0 for s in seeds]
        evaluation = [sum(r.eval_seconds or 0.0 for r in mine if r.seed == s) for s in seeds]
        mean = [sum(v) / len(v) if v else float("nan") for v in (train, evaluation)]
        table.append([display, *map(_seconds, mean), _seconds(mean[0] + mean[1])])
    devices = sorted({str(r.provenance["device"]) for r in rows if r.provenance.get("device")})
    run = _run_json(out)
    total = f" The last run took {run['seconds']:.0f} s in all (cached tasks cost nothing)." if isinstance(run.get("seconds"), (int, float)) else ""
    note = (f"Seconds per leaderboard row, mean over seeds: training (from the training run's record) and evaluation (every "
            f"attack of the row), on {', '.join(devices) or 'an unknown device'}. A `+wa` row shares its training run (and "
            f"its seconds) with the row it averages.{total}")  # fmt: skip
    headers = ["Defence", "training (s)", "evaluation (s)", "total (s)"]
    return f'<section id="cost"><h2>Cost</h2>\n<p>{inline(note)}</p>\n{table_html(headers, table, ["", "num", "num", "num"])}\n</section>'


def page(plan: Plan, rows: Sequence[ResultRow], out: Path, paper_md: str | None = None) -> str:
    """The whole HTML document for ``plan`` from its rows and the files already written in ``out``."""
    suite = plan.suite
    board, flags = _leaderboard(plan, rows, out)
    sections = [board, flags, _corruptions(out), _curves(out), _analysis(out), _paper(paper_md, out), _provenance(plan, rows, out),
                _cost(plan, rows, out)]  # fmt: skip
    sections = [s for s in sections if s]
    titles = {"leaderboard": "Leaderboard", "flags": "Flags", "corruptions": "Corruptions", "curves": "Curves", "analysis": "Spectral analysis",
              "paper": "Paper table", "provenance": "Provenance", "cost": "Cost"}  # fmt: skip
    nav = " ".join(f'<a href="#{k}">{v}</a>' for k, v in titles.items() if any(f'<section id="{k}">' in s for s in sections))
    n_rows = len(dict.fromkeys(j.display for j in plan.eval_jobs))
    more = (f" · {len(plan.external_columns)} external" if plan.external_columns else "") + (
        f" · {len(plan.corruption_columns)} corruption columns" if plan.corruption_columns else "")
    subtitle = f"{suite.dataset.name} · {suite.model.name} · {n_rows} rows · {len(plan.columns)} attacks{more}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>bench: {html.escape(suite.name)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<header><h1>Results: {html.escape(suite.name)}</h1><p class=\"muted\">{html.escape(subtitle)}</p><nav>{nav}</nav></header>",
        *sections,
        "</body>",
        "</html>",
        "",
    ])  # fmt: skip


def write_index(plan: Plan, rows: Sequence[ResultRow], out: Path, paper_md: str | None = None) -> Path:
    """Write ``<out>/index.html`` (atomically); returns its path."""
    path = Path(out) / "index.html"
    atomic_write_text(path, page(plan, rows, Path(out), paper_md))
    return path
