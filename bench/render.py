"""Tidy rows -> ``leaderboard.md``, ``results.csv``, ``results.json`` in ``<results>/<suite>/``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.aggregate import WORST
from bench.plan import Plan
from bench.store import atomic_write_text

MISSING = "—"


def _cell(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return MISSING
    mean = 100 * sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    std = 100 * pd.Series(values).std(ddof=1)
    return f"{mean:.2f} ± {std:.2f}"


def leaderboard_rows(plan: Plan, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and body: one row per defence (mean ± std over seeds), sorted by worst case."""
    headers = ["Defence", "Clean", *plan.columns, WORST]
    df = pd.DataFrame(rows)
    body = []
    for display in dict.fromkeys(j.display for j in plan.eval_jobs):
        sub = df[df["display_name"] == display] if len(df) else df
        if len(sub) == 0:
            body.append(([display, MISSING] + [MISSING] * (len(plan.columns) + 1), -1.0))
            continue
        per_seed_clean = sub.drop_duplicates("seed")["clean_acc"].tolist()
        cells = [display, _cell(per_seed_clean)]
        for col in [*plan.columns, WORST]:
            cells.append(_cell(sub[sub["attack"] == col]["robust_acc"].tolist()))
        worst = sub[sub["attack"] == WORST]["robust_acc"]
        body.append((cells, float(worst.mean()) if len(worst) else -1.0))
    body.sort(key=lambda item: -item[1])
    return headers, [cells for cells, _ in body]


def leaderboard_markdown(plan: Plan, rows: list[dict[str, Any]]) -> str:
    suite = plan.suite
    headers, body = leaderboard_rows(plan, rows)
    n = rows[0]["clean_n"] if rows else plan.eval_spec.n_examples
    smaller = [f"{c}: first {a.n_examples}" for a, c in zip(plan.attacks, plan.columns) if a.n_examples and (n is None or a.n_examples < n)]
    subset_note = f"; {', '.join(smaller)} of them (Worst case over the examples every attack saw)" if smaller else ""
    seeds = ", ".join(str(s) for s in suite.seeds)
    lines = [
        f"# Leaderboard: {suite.name}",
        "",
        f"- Dataset: `{suite.dataset.name}`; model: `{suite.model.name}`",
        f"- Threat: L∞, ε = {suite.threat.eps_text}",
        f"- Test examples: {n if n is not None else 'all'} (subset seed {plan.eval_spec.subset_seed}){subset_note}",
        f"- Checkpoint selection: `{suite.train.selection}`; epochs: {suite.train.epochs}; seeds: {seeds}",
        "- Accuracy in %; Worst case = a sample counts as robust only if it survives every attack."
        + (" Mean ± std over seeds." if len(suite.seeds) > 1 else ""),
        "",
        tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=("left",) + ("right",) * (len(headers) - 1)),
        "",
    ]
    flagged = {}
    for row in rows:
        if row.get("flags"):
            flagged.setdefault(row["display_name"], set()).update(row["flags"].split("; "))
    if flagged:
        lines.append("**Sanity flags** (see `bench/sanity.py`):\n")
        lines.extend(f"- `{name}`: {'; '.join(sorted(msgs))}" for name, msgs in flagged.items())
        lines.append("")
    missing = sum(MISSING in row for row in body)
    if missing:
        lines.append(f"{MISSING} = not evaluated yet ({missing} row(s) incomplete).\n")
    return "\n".join(lines)


def write_results(plan: Plan, rows: list[dict[str, Any]], results_dir: Path) -> Path:
    out = Path(results_dir) / plan.suite.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(plan, rows))
    df = pd.DataFrame(rows)
    atomic_write_text(out / "results.csv", df.to_csv(index=False) if len(df) else "")
    atomic_write_text(out / "results.json", json.dumps(rows, indent=1, default=str) + "\n")
    return out
