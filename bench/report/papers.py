"""Paper tables: a suite's ``paper:`` section lays its results out like a published table.

Each cell shows our value (mean ± std over seeds), the paper's value and the difference Δ, with
"—" where a value is missing; cells with |Δ| above the suite's tolerance are flagged. In the
``leaderboard`` layout bold marks every row of the table that no other row of the table is
significantly better than (its rank range starts at 1: ``stats.paired_p`` on the per-sample flags,
the test example as the unit, Holm over all pairs of the table's rows, ``bench/core/stats.py``), the
leaderboard's rule: papers bold margins of one example, we do not; the ``lpf`` layout bolds our
best mean. A column filled from one of ours with another name is headed ``paper name (ours)``,
e.g. ``AA (APGD-CE+T·50it·2tgt)``, so a reduced AutoAttack is never shown as the standard one.
Two layouts:

* ``leaderboard``: rows are leaderboard rows (``pgd_at``, ``fr+wa``, ...), columns are ``Clean``
  or attack columns (``PGD-20``, ``AutoAttack``, ...).
* ``lpf``: FR Table 1 style from the spectral analysis; rows pick an analysed model and an input
  (``clean`` or ``adversarial``), columns are low-pass masks (``b=32`` or ``r=8``).

Rendered as Markdown, LaTeX (booktabs) or CSV by ``bench report SUITE --format md|latex|csv``. The
``paper:`` section itself is read and checked by the suite (``bench/suite/paper.py``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.core import stats
from bench.suite.specs import PaperColumn, PaperSpec

if TYPE_CHECKING:
    from bench.report.rows import ResultRow

MISSING = "—"


# ------------------------------------------------------------------------------------------ cells


@dataclass
class Cell:
    ours: list[float]  # one value (%) per seed; empty = not run yet
    paper: float | None
    bold: bool = False

    @property
    def mean(self) -> float | None:
        return sum(self.ours) / len(self.ours) if self.ours else None

    @property
    def std(self) -> float | None:
        if len(self.ours) < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.ours) / (len(self.ours) - 1))  # type: ignore[operator]

    @property
    def delta(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


def leaderboard_values(rows: Sequence[ResultRow]) -> dict[tuple[str, str], list[float]]:
    """(our row, our column) -> per-seed values in %, from the result rows."""
    out: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        out.setdefault((r.display_name, r.attack), []).append(100 * r.robust_acc)
    for first in {(r.display_name, r.seed): r for r in rows}.values():
        out.setdefault((first.display_name, "Clean"), []).append(100 * first.clean_acc)
    return out


def lpf_values(analyses: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[float]]:
    """(analysed row, input, mask) -> per-seed low-pass accuracies in %, from cached analyses."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for a in analyses:
        for f in a["metrics"]["filtered"]:
            if f["pass"] == "low":
                out.setdefault((a["display"], "clean", f["mask"]), []).append(100 * f["clean_acc"])
                out.setdefault((a["display"], "adversarial", f["mask"]), []).append(100 * f["adv_acc"])
    return out


def leaderboard_ties(spec: PaperSpec, outcomes: dict[tuple[str, str], stats.Runs]) -> dict[tuple[str, str], bool]:
    """(our row, our column) -> bold: no row of the table significantly better, from per-sample outcomes."""
    ours = [r.ours for r in spec.rows if r.ours is not None]
    ties = {}
    for col in spec.columns:
        ranked = stats.ranks({row: outcomes[(row, col.ours)] for row in ours if (row, col.ours) in outcomes})
        ties.update({(row, col.ours): r.bold for row, r in ranked.items()})
    return ties


def build_cells(spec: PaperSpec, values: dict, ties: dict[tuple[str, str], bool] | None = None) -> list[list[Cell]]:
    """The table's cells; ``ties`` (leaderboard layout) bolds the rows it marks, else only the best mean."""
    table = []
    for row in spec.rows:
        cells = []
        for col in spec.columns:
            key = (row.ours, col.ours) if spec.layout == "leaderboard" else (row.ours, row.input, col.ours)
            cells.append(Cell(list(values.get(key, [])) if row.ours else [], row.reported.get(col.name)))
        table.append(cells)
    for j, col in enumerate(spec.columns):
        means = [r[j].mean for r in table if r[j].mean is not None]
        if ties is not None:
            for row, cells in zip(spec.rows, table):
                cells[j].bold = len(means) > 1 and ties.get((row.ours, col.ours), False)
        elif len(means) > 1:
            best = max(means)
            for r in table:
                r[j].bold = r[j].mean is not None and math.isclose(r[j].mean, best)  # type: ignore[arg-type]
    return table


# -------------------------------------------------------------------------------------- rendering


def _ours(cell: Cell, bold: tuple[str, str]) -> str:
    if cell.mean is None:
        return MISSING
    text = f"{cell.mean:.2f}"
    if cell.bold:
        text = f"{bold[0]}{text}{bold[1]}"
    return text + (f" ± {cell.std:.2f}" if cell.std is not None else "")


def _flag(cell: Cell, tol: float) -> bool:
    return cell.delta is not None and abs(cell.delta) > tol


def heading(col: PaperColumn) -> str:
    """The paper's column name, with ours in parentheses when it has another name."""
    return col.name if col.ours == col.name else f"{col.name} ({col.ours})"


def bold_note(spec: PaperSpec) -> str:
    if spec.layout == "lpf":  # analyses keep no per-sample flags: no test, the best mean only
        return "bold = our best per column"
    return ("bold = every row no other row is significantly better than (paired test over the test examples: exact McNemar "
            "for one seed, exact sign-flip over examples for several; Holm over all pairs of the column, α = 0.05)")


def render_markdown(spec: PaperSpec, table: list[list[Cell]], footer: list[str]) -> str:
    head = "| " + " | ".join(["Method", *[heading(c) for c in spec.columns]]) + " |"
    lines = [f"# {spec.title}", "", f"Each cell: ours / paper (Δ = ours − paper, in points); {bold_note(spec)}; "
             f"⚠ = |Δ| > {spec.tolerance_pp:g}.", "", head, "|" + "---|" * (len(spec.columns) + 1)]  # fmt: skip
    for row, cells in zip(spec.rows, table):
        parts = []
        for cell in cells:
            paper = MISSING if cell.paper is None else f"{cell.paper:.2f}"
            delta = "" if cell.delta is None else f" ({cell.delta:+.2f}{' ⚠' if _flag(cell, spec.tolerance_pp) else ''})"
            parts.append(f"{_ours(cell, ('**', '**'))} / {paper}{delta}")
        label = row.label + ("" if spec.layout == "leaderboard" else f" ({row.input})")
        lines.append("| " + " | ".join([label, *parts]) + " |")
    return "\n".join([*lines, "", *footer]) + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(spec: PaperSpec, table: list[list[Cell]], footer: list[str]) -> str:
    cols = "l" + "c" * len(spec.columns)
    latex_bold_note = latex_escape(bold_note(spec)).replace("α", "$\\alpha$")
    lines = [
        "% generated by `bench report --format latex`; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(spec.title)}. Each cell: ours / paper ($\\Delta$); {latex_bold_note}; "
        f"$^\\dagger$: $|\\Delta| > {spec.tolerance_pp:g}$.}}",
        f"\\begin{{tabular}}{{{cols}}}",
        "\\toprule",
        " & ".join(["Method", *[latex_escape(heading(c)) for c in spec.columns]]) + " \\\\",
        "\\midrule",
    ]
    for row, cells in zip(spec.rows, table):
        parts = []
        for cell in cells:
            ours = _ours(cell, ("\\textbf{", "}")).replace(" ± ", " $\\pm$ ").replace(MISSING, "--")
            paper = "--" if cell.paper is None else f"{cell.paper:.2f}"
            dagger = "$^\\dagger$" if _flag(cell, spec.tolerance_pp) else ""
            delta = "" if cell.delta is None else f" ({cell.delta:+.2f}){dagger}"
            parts.append(f"{ours} / {paper}{delta}")
        label = row.label + ("" if spec.layout == "leaderboard" else f" ({row.input})")
        lines.append(" & ".join([latex_escape(label), *parts]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    lines += [f"% {line}" for line in footer if line]
    return "\n".join(lines) + "\n"


def render_csv(spec: PaperSpec, table: list[list[Cell]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "input", "column", "ours_mean", "ours_std", "n_seeds", "paper", "delta", "flagged", "bold"])
    for row, cells in zip(spec.rows, table):
        for col, cell in zip(spec.columns, cells):
            w.writerow([row.label, row.input if spec.layout == "lpf" else "", heading(col), cell.mean, cell.std,
                        len(cell.ours), cell.paper, cell.delta, _flag(cell, spec.tolerance_pp), cell.bold])  # fmt: skip
    return buf.getvalue()
