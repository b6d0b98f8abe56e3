"""The corruption group of the leaderboard: its columns, the mean, the mCE, and ``corruptions.md``.

A corruption column (``bench/suite/columns.py``) is one (corruption, severity); the leaderboard shows one
column per corruption, the mean of its severities when the suite has several (every (corruption,
severity) cell, with its interval, is in ``corruptions.md`` and ``results.csv``), then ``Corruption mean``
(the mean over every corruption column: the benchmark's "mean corruption accuracy") and, with
``leaderboard.mce_reference``, the mCE as the corruption benchmark defines it (Hendrycks & Dietterich,
ICLR 2019, section 3): for each corruption c, CE_c = Σ_s E(row, c, s) / Σ_s E(reference, c, s) with E the
error rate (100 % − accuracy), and mCE the mean of CE_c over the corruptions (in %; the reference row's is 100).
Values are means over seeds, as every leaderboard cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.plan.tasks import Plan
from bench.report.rows import CORRUPTION_MEAN

MCE = "mCE"


def groups(plan: Plan) -> list[tuple[str, list[str]]]:
    """(leaderboard header, the corruption columns it averages): one per corruption (and source)."""
    out: dict[str, list[str]] = {}
    both = len({ref.source for ref, _ in plan.corruption_columns}) > 1
    for ref, label in plan.corruption_columns:
        out.setdefault(f"{ref.name} ({ref.source})" if both else ref.name, []).append(label)
    if all(len(cols) == 1 for cols in out.values()):  # one severity each: the columns as they are
        return [(cols[0], cols) for cols in out.values()]
    return list(out.items())


def headers(plan: Plan) -> list[str]:
    """The group's leaderboard headers: per corruption, then the mean and the mCE when there are several / a reference."""
    if not plan.corruption_columns:
        return []
    names = [h for h, _ in groups(plan)]
    mean = [CORRUPTION_MEAN] if len(plan.corruption_columns) > 1 else []
    return names + mean + ([MCE] if plan.suite.leaderboard.mce_reference else [])


def _mean_over_seeds(sub: pd.DataFrame, column: str) -> float | None:
    at = sub[sub["attack"] == column]["robust_acc"].dropna() if len(sub) else []
    return float(at.mean()) if len(at) else None


def errors(plan: Plan, df: pd.DataFrame, display: str) -> dict[str, float | None]:
    """Corruption column -> the row's error rate on it (fraction, mean over seeds; None when not evaluated)."""
    sub = df[df["display_name"] == display] if len(df) else df
    out: dict[str, float | None] = {}
    for _, label in plan.corruption_columns:
        acc = _mean_over_seeds(sub, label)
        out[label] = None if acc is None else 1.0 - acc
    return out


def mce(plan: Plan, df: pd.DataFrame, display: str) -> tuple[float | None, dict[str, float | None]]:
    """The row's mCE (%) against ``leaderboard.mce_reference`` and its CE per corruption (%); None where a cell is missing."""
    reference = plan.suite.leaderboard.mce_reference
    if reference is None:
        return None, {}
    mine, ref = errors(plan, df, display), errors(plan, df, reference)
    ce: dict[str, float | None] = {}
    for header, cols in groups(plan):
        if any(mine[c] is None or ref[c] is None for c in cols) or sum(ref[c] for c in cols) == 0:
            ce[header] = None
        else:
            ce[header] = 100 * sum(mine[c] for c in cols) / sum(ref[c] for c in cols)
    values = list(ce.values())
    return (None if not values or None in values else sum(values) / len(values)), ce


def cells(plan: Plan, df: pd.DataFrame, display: str, cell: Any) -> list[str]:
    """The row's cells of the group: ``cell(values, stats)`` for a single column (its statistics by ``stats``), the mean
    of several columns' accuracies without an interval (no per-sample cell), the mean and the mCE."""
    if not plan.corruption_columns:
        return []
    sub = df[df["display_name"] == display] if len(df) else df
    out = []
    for header, cols in groups(plan):
        if len(cols) == 1:
            out.append(cell(sub, cols[0]))
            continue
        means = [_mean_over_seeds(sub, c) for c in cols]
        out.append(_plain(None if None in means else sum(means) / len(means)))
    if len(plan.corruption_columns) > 1:
        out.append(_plain(_mean_over_seeds(sub, CORRUPTION_MEAN)))
    if plan.suite.leaderboard.mce_reference:
        value, _ = mce(plan, df, display)
        out.append("—" if value is None else f"{value:.1f}")
    return out


def _plain(acc: float | None) -> str:
    return "—" if acc is None or math.isnan(acc) else f"{100 * acc:.2f}"


def header_lines(plan: Plan) -> list[str]:
    """The leaderboard's note on the group (nothing without corruption columns)."""
    if not plan.corruption_columns:
        return []
    sources = sorted({ref.source for ref, _ in plan.corruption_columns})
    text = (
        f"- Corruptions ({len(plan.corruption_columns)} column{'s' if len(plan.corruption_columns) > 1 else ''}; {' and '.join(sources)}): accuracy on the corrupted test images, "
        "every image counted (not only those classified correctly when clean); not attacks, so not in Worst case."
    )
    if any(len(cols) > 1 for _, cols in groups(plan)):
        text += " A corruption's column is the mean of its severities (each in `corruptions.md`, with its interval)."
    if len(plan.corruption_columns) > 1:
        text += f" {CORRUPTION_MEAN}: the mean of every corruption column."
    if plan.suite.leaderboard.mce_reference:
        text += (f" {MCE}: mean over corruptions of the errors summed over severities, relative to "
                 f"`{plan.suite.leaderboard.mce_reference}` (= 100); lower is better.")  # fmt: skip
    return [text]


def corruptions_markdown(plan: Plan, df: pd.DataFrame, displays: Sequence[str], cell: Any) -> str:
    """``corruptions.md``: one line per (corruption, severity) and a column per leaderboard row, each cell with its
    interval; with ``mce_reference`` the CE per corruption and the mCE in the same layout."""
    subs = {d: df[df["display_name"] == d] if len(df) else df for d in displays}
    both = len({ref.source for ref, _ in plan.corruption_columns}) > 1
    body = [[f"{ref.name} ({ref.source})" if both else ref.name, ref.severity, *(cell(subs[d], label) for d in displays)]
            for ref, label in plan.corruption_columns]  # fmt: skip
    lines = [
        f"# Corruptions: {plan.suite.name}",
        "",
        (
            "Accuracy (%) on the corrupted test images [95 % interval] per corruption and severity; bold: no row "
            "of the leaderboard is significantly better on that line (the leaderboard's paired test)."
        ),
        "",
        tabulate(body, headers=["Corruption", "Severity", *displays], tablefmt="pipe", disable_numparse=True),
        "",
    ]
    reference = plan.suite.leaderboard.mce_reference
    if reference:
        results = {d: mce(plan, df, d) for d in displays}
        show = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
        rows = [[name, *(show(results[d][1][name]) for d in displays)] for name, _ in groups(plan)]
        rows.append([f"**{MCE}**", *(show(results[d][0]) for d in displays)])
        lines += [
            (
                f"Corruption error CE_c (%) relative to `{reference}`: the errors summed over the severities, divided by "
                f"the reference's; {MCE} is their mean (lower is better)."
            ),
            "",
            tabulate(rows, headers=["Corruption", *displays], tablefmt="pipe", disable_numparse=True),
            "",
        ]
    return "\n".join(lines)
