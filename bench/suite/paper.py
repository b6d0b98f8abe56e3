"""A suite's ``paper:`` section: the published table a suite lays its results out like.

:func:`read_paper` checks the section on its own (keys, types, layout, reported values) when the
suite is loaded; :func:`check_paper` checks that the rows and columns it names are rows and
columns of the plan, which only the planner knows (``bench/plan/expand.py``). The tables are
rendered by ``bench/report/papers.py``.
"""

from __future__ import annotations

import difflib
from typing import Any

from bench.core.errors import ConfigError, show
from bench.core.params import parse_fraction
from bench.suite.specs import PaperColumn, PaperRow, PaperSpec


def _fail_unknown(where: str, what: str, value: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(value, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(where, f"unknown {what} {show(value)}{hint}; known: {', '.join(known) or 'none'}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {show(value)}")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a non-empty list, got {show(value)}")
    return value


def read_paper(raw: Any, where: str) -> PaperSpec:
    """Strictly parse a ``paper:`` mapping (its rows and columns are checked against a plan by :func:`check_paper`)."""
    if not isinstance(raw, dict):
        raise ConfigError(where, "expected a mapping with title, source, layout, columns, rows")
    allowed = {"title", "source", "layout", "columns", "rows", "tolerance_pp", "note"}
    for key in raw:
        if key not in allowed:
            raise _fail_unknown(f"{where}.{key}", "key", str(key), sorted(allowed))
    for key in ("title", "source", "columns", "rows"):
        if key not in raw:
            raise ConfigError(f"{where}.{key}", "missing")
    layout = raw.get("layout", "leaderboard")
    if layout not in ("leaderboard", "lpf"):
        raise ConfigError(f"{where}.layout", f"expected leaderboard or lpf, got {show(layout)}")
    text = {key: _text(raw.get(key, ""), f"{where}.{key}") for key in ("title", "source", "note")}
    columns = []
    for i, col in enumerate(_list(raw["columns"], f"{where}.columns")):
        at = f"{where}.columns[{i}]"
        if isinstance(col, str):
            col = {"name": col, "ours": col}
        if not isinstance(col, dict) or set(col) - {"name", "ours"} or "name" not in col:
            raise ConfigError(at, "expected {name: <paper column>, ours: <our column>} or a column name")
        ours = _text(col.get("ours", col["name"]), f"{at}.ours")
        if layout == "lpf" and not (ours[:2] in ("b=", "r=") and ours[2:].isdigit()):
            raise ConfigError(f"{at}.ours", f"expected a low-pass mask such as b=16 or r=8, got {show(ours)}")
        columns.append(PaperColumn(_text(col["name"], f"{at}.name"), ours))
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.columns", "expected a non-empty list of distinct columns")
    rows = []
    for i, row in enumerate(_list(raw["rows"], f"{where}.rows")):
        at = f"{where}.rows[{i}]"
        if not isinstance(row, dict) or "label" not in row or set(row) - {"label", "ours", "reported", "input"}:
            raise ConfigError(at, "expected {label: ..., ours: <our row or null>, reported: {column: value}}")
        label = _text(row["label"], f"{at}.label")
        reported = {}
        if not isinstance(row.get("reported") or {}, dict):
            raise ConfigError(f"{at}.reported", f"expected a mapping {{column: value}}, got {show(row['reported'])}")
        for col, value in (row.get("reported") or {}).items():
            if col not in names:
                raise _fail_unknown(f"{at}.reported.{col}", "column", str(col), names)
            reported[str(col)] = None if value is None else float(parse_fraction(value, f"{at}.reported.{col}"))
        kind = row.get("input", "clean")
        if kind not in ("clean", "adversarial"):
            raise ConfigError(f"{at}.input", f"expected clean or adversarial, got {show(kind)}")
        rows.append(PaperRow(label, row.get("ours"), reported, kind))
    tol = float(parse_fraction(raw.get("tolerance_pp", 1.0), f"{where}.tolerance_pp"))
    if tol < 0:
        raise ConfigError(f"{where}.tolerance_pp", "must be >= 0")
    return PaperSpec(text["title"], text["source"], layout, tuple(columns), tuple(rows), tol, text["note"])


def check_paper(spec: PaperSpec, where: str, our_rows: list[str], our_columns: list[str], analysed: list[str]) -> PaperSpec:
    """``spec`` when every row and column it names is one of ours: leaderboard rows and columns (``Clean``
    or an attack column), or for the ``lpf`` layout the analysed rows."""
    if spec.layout == "leaderboard":
        for i, col in enumerate(spec.columns):
            if col.ours not in ["Clean", *our_columns]:
                raise _fail_unknown(f"{where}.columns[{i}].ours", "column", col.ours, ["Clean", *our_columns])
    candidates = analysed if spec.layout == "lpf" else our_rows
    for i, row in enumerate(spec.rows):
        if row.ours is not None and row.ours not in candidates:
            what = "row" if spec.layout == "leaderboard" else "analysed row"
            raise _fail_unknown(f"{where}.rows[{i}].ours", what, str(row.ours), candidates)
    return spec


def parse_paper(raw: Any, where: str, our_rows: list[str], our_columns: list[str], analysed: list[str]) -> PaperSpec:
    """:func:`read_paper` then :func:`check_paper`: a ``paper:`` mapping whose rows and columns exist in the suite."""
    return check_paper(read_paper(raw, where), where, our_rows, our_columns, analysed)
