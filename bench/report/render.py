"""Result rows (``bench/report/rows.py``) -> ``leaderboard.md``, ``results.csv``, ``results.json`` in ``<results>/<suite>/``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.core.files import atomic_write_text
from bench.core.stats import ALPHA, BOOT_SEED, N_BOOT, detectable_difference, min_discordant
from bench.evaluation.parity import parity_note
from bench.evaluation.randomised import header_lines as randomised_lines
from bench.plan.tasks import Plan
from bench.report import corruptions
from bench.report.papers import latex_escape
from bench.report.rows import CLEAN, CORRUPTION_MEAN, WORST, ResultRow, records

MISSING = "—"


Bold = tuple[str, str]
MARKDOWN_BOLD: Bold = ("**", "**")


def speed_lines(plan: Any, rows: Sequence[ResultRow]) -> list[str]:
    """Header notes for the fast paths: ``eval.cascade``, and the precision each phase asked for and ran."""
    out = []
    if plan.eval_spec.cascade:
        out.append("- Cascade (`eval.cascade`): each attack column counts the points that survived it *after the attacks "
                   "to its left* (it attacked only those); Worst case is exact. The attack-comparison sanity flags (Square "
                   "beats every gradient attack, an iterative attack weaker than FGSM) are not computed under cascade: "
                   "a later column never attacked the points an earlier one broke, so no two columns can be compared.")  # fmt: skip
    train, ev = plan.suite.train.precision, plan.eval_spec.precision
    if train != "fp32" or ev != "fp32":
        ran = lambda key: ", ".join(sorted({str(getattr(r, key)) for r in rows if getattr(r, key)})) or "not recorded"  # noqa: E731
        out.append(f"- Precision: training `{train}` (ran {ran('train_precision')}), attacks `{ev}` (ran {ran('eval_precision')}); "
                   "final predictions always fp32. `auto` is the fastest path each device runs natively (keyed as `auto`).")  # fmt: skip
    if any(r.eval_precision not in (None, "fp32") for r in rows) or (ev not in ("fp32", "auto") and not rows):
        out.append(f"- {parity_note(records(rows))}.")
    return out


def _cell(values: list[float], stats: dict[str, Any] | None = None, bold: Bold = MARKDOWN_BOLD) -> str:
    """``mean [ci_low, ci_high]`` (mean over seeds, in %), bold when no row is significantly better (``tied_with_best``)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return MISSING
    text = f"{100 * sum(values) / len(values):.2f}"
    if stats is None or not _known(stats.get("ci_low")):
        return text
    if _known(stats.get("tied_with_best")) and bool(stats["tied_with_best"]):
        text = f"{bold[0]}{text}{bold[1]}"
    return f"{text} [{stats['ci_low']:.1f}, {stats['ci_high']:.1f}]"


def _stats(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {k: row.get(prefix + k) for k in ("ci_low", "ci_high", "tied_with_best", "rank_low", "rank_high")}


def _known(value: Any) -> bool:
    """Not None and not NaN (pandas fills missing cells with NaN)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _rank(stats: dict[str, Any]) -> str:
    lo, hi = stats.get("rank_low"), stats.get("rank_high")
    if not _known(lo) or not _known(hi):
        return MISSING
    return f"{int(lo)}" if lo == hi else f"{int(lo)}–{int(hi)}"


def _cost(sub: pd.DataFrame) -> str:
    """Mean over seeds of training seconds + evaluation seconds (all attacks of the row)."""
    per_seed = sub.groupby("seed").agg(train=("train_seconds", "first"), evaluation=("eval_seconds", "sum"))
    if per_seed["train"].isna().all() and per_seed["evaluation"].isna().all():
        return MISSING
    return f"{per_seed['train'].fillna(0).mean():.0f} + {per_seed['evaluation'].mean():.0f}"


def waiting_lines(plan: Plan) -> list[str]:
    """Per external column, the per-row files it waits for (``- external: {path: ...{row}...}``), if any."""
    by_column: dict[str, list[str]] = {}
    for label, row, seed, path in plan.waiting:
        by_column.setdefault(label, []).append(f"`{os.path.relpath(path, plan.suite.path.parent)}` ({row}, seed {seed})")
    return [
        f"- External column `{label}`: no file yet for {len(files)} row(s): {', '.join(files)} (relative to the suite file); "
        "their cell and Worst case stay empty until it exists (your attack on `bench.trained_models(suite)`, saved there)."
        for label, files in by_column.items()
    ]


def leaderboard_rows(
    plan: Plan, rows: Sequence[ResultRow], cost: bool = False, bold: Bold = MARKDOWN_BOLD
) -> tuple[list[str], list[list[str]]]:
    """Header and body: one row per defence (mean over seeds with its interval), sorted by worst case; the
    corruption columns after Worst case, in their own group (``bench/report/corruptions.py``)."""
    group = corruptions.headers(plan)
    headers = ["Rank", "Defence", CLEAN, *plan.worst_columns, WORST, *group] + (["Cost (s)"] if cost else [])
    df = pd.DataFrame(records(rows))  # the edge: grouped per row, column and seed as a table
    cell = _column_cell(bold)
    body = []
    for display in dict.fromkeys(j.display for j in plan.eval_jobs):
        sub = df[df["display_name"] == display] if len(df) else df
        if len(sub) == 0:
            body.append(([MISSING, display, MISSING] + [MISSING] * (len(headers) - 3), -1.0))
            continue
        first = sub.iloc[0].to_dict()
        per_seed_clean = sub.drop_duplicates("seed")["clean_acc"].tolist()
        cells = [display, _cell(per_seed_clean, _stats(first, "clean_"), bold)]
        cells.extend(cell(sub, col) for col in [*plan.worst_columns, WORST])
        cells.extend(corruptions.cells(plan, df, display, cell))
        worst = sub[sub["attack"] == WORST]
        cells.insert(0, _rank(_stats(worst.iloc[0].to_dict())) if len(worst) else MISSING)
        if cost:
            cells.append(_cost(sub[~sub["attack"].isin([WORST, CORRUPTION_MEAN])]))
        body.append((cells, float(worst["robust_acc"].mean()) if len(worst) else -1.0))
    body.sort(key=lambda item: -item[1])
    return headers, [cells for cells, _ in body]


def _column_cell(bold: Bold):
    """``cell(sub, column)``: the column's cell of one leaderboard row (``sub``: its records), with its statistics."""

    def cell(sub: pd.DataFrame, col: str) -> str:
        at = sub[sub["attack"] == col] if len(sub) else sub
        return _cell(at["robust_acc"].tolist() if len(at) else [], _stats(at.iloc[0].to_dict()) if len(at) else None, bold)

    return cell


NORMS = {"Linf": "L∞", "L2": "L2", "L1": "L1"}


def uncertainty_lines(plan: Plan, n: int | None) -> list[str]:
    """Header lines stating the interval method, the paired test, the family of comparisons behind
    bold and ranks, and the smallest difference that test could ever declare significant."""
    seeds = len(plan.suite.seeds)
    method = (
        "Wilson score interval over the test examples (one seed)"
        if seeds == 1
        else f"two-level bootstrap over seeds and test examples ({N_BOOT} replicates, seed {BOOT_SEED}, percentile)"
    )
    test = (
        "exact McNemar test on the per-sample flags over the common examples"
        if seeds == 1
        else "exact sign-flip test over the common test examples, each example's differences summed over the seeds "
        "(the example is the independent unit, not the (seed, example) pair)"
    )
    lines = [
        f"- Each cell: accuracy [95 % interval: {method}].",
        f"- Paired test: {test}; family: all k(k−1)/2 pairs of rows within a column, Holm-corrected, "
        f"α = {ALPHA:g}. **Bold**: no row of the column is significantly better (its rank range starts at 1); "
        "Rank: the ranks by worst case compatible with all pairwise tests.",
    ]
    if n:
        k = min_discordant(ALPHA)
        if seeds == 1:
            lines.append(
                f"- Smallest detectable difference: with {n} test examples × 1 seed, an exact McNemar test "
                f"needs at least {k} discordant examples, all one way, for p < {ALPHA:g}: differences below "
                f"{100 * detectable_difference(n, 1, ALPHA):.2f} pp can never be significant here."
            )
        else:
            lines.append(
                f"- Smallest detectable difference: with {n} test examples × {seeds} seeds, the sign-flip test needs "
                f"at least {k} examples that differ, all one way, for p < {ALPHA:g}: differences below "
                f"{100 * detectable_difference(n, seeds, ALPHA):.2f} pp ({k} examples differing on one seed each) can "
                f"never be significant here, and below {100 * detectable_difference(n, 1, ALPHA):.2f} pp when the rows "
                "differ on the same examples in every seed."
            )
    return lines


def leaderboard_markdown(plan: Plan, rows: Sequence[ResultRow]) -> str:
    suite = plan.suite
    cost = suite.leaderboard.cost
    headers, body = leaderboard_rows(plan, rows, cost)
    n = rows[0].clean_n if rows else plan.eval_spec.n_examples
    smaller = [f"{c}: first {a.n_examples}" for a, c in zip(plan.attacks, plan.columns) if a.n_examples and (n is None or a.n_examples < n)]
    subset_note = f"; {', '.join(smaller)} of them (Worst case over the examples every attack saw)" if smaller else ""
    seeds = ", ".join(str(s) for s in suite.seeds)
    devices = sorted({str(r.provenance.get("device")) for r in rows if r.provenance.get("device")})
    lines = [
        f"# Leaderboard: {suite.name}",
        "",
        f"- Dataset: `{suite.dataset.name}`; model: `{suite.model.name}`",
        f"- Threat: {NORMS.get(suite.threat.norm, suite.threat.norm)}, ε = {suite.threat.eps_text}",
        f"- Test examples: {n if n is not None else 'all'} (subset seed {plan.eval_spec.subset_seed}){subset_note}",
        f"- Checkpoint selection: `{suite.train.selection}`; epochs: {suite.train.epochs}; seeds: {seeds}",
        "- Accuracy in %; Worst case = a sample counts as robust only if it survives every attack"
        + (" and the adversarial examples of every external column (your own attack's, from a file)." if plan.external_columns else ".")
        + (" Mean over seeds." if len(suite.seeds) > 1 else ""),
        *uncertainty_lines(plan, n),
        *speed_lines(plan, rows),
        *corruptions.header_lines(plan),
        *waiting_lines(plan),
        *randomised_lines(records(rows)),
        *([f"- Cost: training + evaluation seconds (mean over seeds) on {', '.join(devices) or 'unknown device'}."] if cost else []),
        "",
        tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=("right", "left") + ("right",) * (len(headers) - 2)),
        "",
    ]
    flagged = {}
    for row in rows:
        if row.flags:
            flagged.setdefault(row.display_name, set()).update(row.flags.split("; "))
    if flagged:
        lines.append("**Sanity flags** (see `bench/evaluation/sanity.py`, `bench/evaluation/randomised.py`):\n")
        lines.extend(f"- `{name}`: {'; '.join(sorted(msgs))}" for name, msgs in flagged.items())
        lines.append("")
    missing = sum(MISSING in row for row in body)
    if missing:
        lines.append(f"{MISSING} = not evaluated yet ({missing} row(s) incomplete).\n")
    return "\n".join(lines)


def leaderboard_latex(plan: Plan, rows: Sequence[ResultRow]) -> str:
    """The leaderboard table as LaTeX (booktabs rules, ``\\textbf`` for the rows no row is significantly better than)."""
    headers, body = leaderboard_rows(plan, rows, plan.suite.leaderboard.cost, bold=("\\textbf{", "}"))
    lines = [
        "% generated by `bench report --format latex`; needs \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{rl{'r' * (len(headers) - 2)}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in headers) + " \\\\",
        "\\midrule",
        # only the Defence column holds free text; the others are numbers, ranges and the bold markup
        *(" & ".join([rank, latex_escape(name), *numbers]).replace("–", "--").replace(MISSING, "---") + " \\\\" for rank, name, *numbers in body),
        "\\bottomrule",
        "\\end{tabular}",
    ]
    return "\n".join(lines) + "\n"


def results_json(rows: Sequence[ResultRow]) -> str:
    """``results.json``'s text: the rows' records as written (a re-run compares it to know nothing changed)."""
    return json.dumps(records(rows), indent=1, default=str) + "\n"


def write_results(plan: Plan, rows: Sequence[ResultRow], results_dir: Path) -> Path:
    out = Path(results_dir) / plan.suite.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(plan, rows))
    df = pd.DataFrame(records(rows))  # columns: the union of the records', in order of first appearance
    atomic_write_text(out / "results.csv", df.to_csv(index=False) if len(df) else "")
    atomic_write_text(out / "results.json", results_json(rows))
    if plan.corruption_columns:
        displays = list(dict.fromkeys(j.display for j in plan.eval_jobs))
        atomic_write_text(out / "corruptions.md", corruptions.corruptions_markdown(plan, df, displays, _column_cell(MARKDOWN_BOLD)))
    return out
