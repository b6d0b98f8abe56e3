"""Hostile suites: whatever a suite file holds, ``bench validate`` and ``bench run`` either accept it
or print exactly one line ``bench: error: FILE: FIELD: ...`` on stderr, exit with 2, show no
traceback and write nothing (no cache, no results, nothing outside the results directory).

Fuzzed suites are the smoke suite with one key path replaced by a hostile value, so the fuzz
reaches the nested validation code; they are rejected (or accepted) before any training.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.cli import main
from tests.conftest import SUITES

# the smoke suite with a paper table, so that the fuzz reaches bench/papers.py too
PAPER = {
    "title": "Smoke", "source": "none", "columns": [{"name": "Clean", "ours": "Clean"}, "FGSM"],
    "rows": [{"label": "AT", "ours": "pgd_at", "reported": {"Clean": 80.5, "FGSM": "101/2"}}],
    "tolerance_pp": 1.5, "note": "",
}  # fmt: skip
BASE: dict[str, Any] = {**yaml.safe_load((SUITES / "smoke.yaml").read_text()), "paper": PAPER}
HOLE = "HOSTILE_VALUE_HERE"  # stands for the hostile value in the dumped base suite


# ---------------------------------------------------------------------------------- the contract


class Sandbox:
    """A temporary folder with the suite file(s); nothing else may ever appear in it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
        return path

    def argv(self, command: str, suite: Path) -> list[str]:
        """``run`` and ``validate`` with a cache and a results folder that must never be created."""
        if command == "validate":
            return ["validate", str(suite), "--cache-dir", str(self.root / "cache")]
        argv = ["run", str(suite), "--cache-dir", str(self.root / "cache"), "--results-dir", str(self.root / "results")]
        return [*argv, "--dry-run"] if command == "run-dry" else [*argv, "--device", "cpu"]

    def check(self, command: str, suite: Path, capsys: pytest.CaptureFixture, named: Path | None = None) -> str | None:
        """``bench COMMAND suite`` (``run-dry`` = ``run --dry-run``): None if accepted, else its error line,
        after checking the contract: exit code 2, one line naming the file (``named``), nothing written."""
        before = sorted(self.root.rglob("*"))
        code = main(self.argv(command, suite))
        out, err = capsys.readouterr()
        assert sorted(self.root.rglob("*")) == before, "something was written"
        if code == 0:
            assert err == "" and out.endswith("ok\n" if command == "validate" else "\n")
            return None
        assert code == 2, err
        assert err.startswith(f"bench: error: {named or suite}: ") and err.endswith("\n"), err
        assert len(err.splitlines()) == 1, err
        return err


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "env-cache"))  # the default cache: must not appear either
    return Sandbox(tmp_path)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``bench run`` that gets past validation fails the test at once instead of training."""
    import bench.runner

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a hostile suite got past validation")

    monkeypatch.setattr(bench.runner, "run_suite", refuse)


# ------------------------------------------------------------------------------------ generation


class _Dumper(yaml.SafeDumper):
    """Strings double-quoted with escapes, so any value dumps to one line."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style='"'))


def flow(value: Any) -> bytes:
    """``value`` as a one-line YAML flow node."""
    text = yaml.dump([value], Dumper=_Dumper, default_flow_style=True, width=math.inf, allow_unicode=False)
    return text.strip()[1:-1].encode()


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a parsed suite, the root first."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [prefix, *(p for k, v in children for p in key_paths(v, (*prefix, k)))]


def field(path: tuple) -> str:
    """A key path as bench names it: ``defences[1].pgd_at.steps``."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")


def mutate(base: dict[str, Any], path: tuple, fragment: bytes) -> bytes:
    """The suite ``base`` with the value at ``path`` replaced by the YAML ``fragment``."""
    if not path:
        return fragment
    doc = copy.deepcopy(base)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = HOLE
    text = yaml.safe_dump(doc, sort_keys=False, width=math.inf, default_flow_style=None).encode()
    assert text.count(HOLE.encode()) == 1
    return text.replace(HOLE.encode(), fragment)


LAUGHS = (
    b"[&a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"
    + b"".join(b", &%c [%s]" % (c, b", ".join([b"*%c" % (c - 1)] * 10)) for c in b"bcdefghi")
    + b"]"
)  # 10^9 strings in nine lines of aliases


def dump(suite: dict[str, Any]) -> str:
    return yaml.safe_dump(suite, sort_keys=False)


# ----------------------------------------------------------------------- regressions, one per bug

# (key path in the smoke suite, hostile YAML there, the error after "FILE: ")
REGRESSIONS = [
    # error messages: one line, and short whatever the value
    (("threat", "eps"), b'"2\\n"', "threat.eps: must be in (0, 1] (pixel space), got '2\\n'"),
    (("train",), b'{"ep\\nochs": 4}', "train.ep\\nochs: unknown key"),
    (("defences", 0), LAUGHS, "defences[0]: expected a defence name or {name: {param: value}}, got [['lol', 'lol',"),
    # reading the file: UTF-8, nesting, integers, mapping keys
    (("name",), b"sm\xffoke", "not UTF-8 text"),
    (("defences",), b"[" * 1000 + b"]" * 1000, "invalid YAML: nested too deeply"),
    (("train",), b"{? [a, b] : 1}", "invalid YAML at line 7: found unhashable key"),
    (("train", "epochs"), b"9" * 5000, "invalid YAML at line 8: not an integer: Exceeds the limit"),
    (("seeds", 0), b"1" + b"0" * 100, "invalid YAML at line 25: integer out of range"),
    (("threat", "eps"), b"2001-13-45", "invalid YAML: month must be in 1..12"),
    (("plugins",), b"['" + b"x" * 5000 + b".py']", "plugins[0]: plug-in cannot read: File name too long"),
    (("train", "schedule"), b"{<<: 5}", "invalid YAML at line 11: expected a mapping or list of mappings for merging"),
    # validation: numbers in float range, key and list types, plug-in imports, folder-safe names
    (("threat", "eps"), b"'1e999999999'", "threat.eps: out of range"),
    (("train", "optimizer", "lr"), b"'1e400'", "train.optimizer.lr: out of range"),
    (("threat",), b"{1: a, b: 2}", "threat.1: unknown key"),
    (("defences", 0), b"{trades: {preset: [1]}}", "defences[0].trades.preset: unknown preset [1]"),
    (("attacks",), b"0", "attacks: expected a list, got int"),
    (("name",), b'"a\\0b"', "name: expected a folder name"),
    (("name",), b"x" * 300, "name: expected a folder name"),
    (("name",), b'"\\ud800"', "name: expected a folder name"),
    (("name",), b"!!binary aGVsbG8=", "name: expected a folder name"),
    (("plugins",), b'[""]', "plugins[0]: cannot import plug-in module '': Empty module name"),
    (("plugins",), b"['.x']", "plugins[0]: cannot import plug-in module '.x'"),
    (("analysis",), b"0", "analysis: expected a mapping of parameters, got int 0"),
    (("plugins",), b"{}", "plugins: expected a list"),
    # paper tables: strict types
    (
        ("paper",),
        b"{title: T, source: S, columns: 5, rows: [{label: a}]}",
        "paper.columns: expected a non-empty list, got 5",
    ),
    (
        ("paper",),
        b"{title: T, source: S, columns: [Clean], rows: [{label: a, reported: [1]}]}",
        "paper.rows[0].reported: expected a mapping",
    ),
    (("paper",), b"{title: {a: 1}, source: S, columns: [Clean], rows: [{label: a}]}", "paper.title: expected a string"),
    (
        ("paper",),
        b"{title: T, source: S, columns: [Clean], rows: [{label: a}], tolerance_pp: -1}",
        "paper.tolerance_pp: must be >= 0",
    ),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("path, fragment, expected", REGRESSIONS, ids=[e[:40] for *_, e in REGRESSIONS])
def test_regressions(
    sandbox: Sandbox,
    capsys: pytest.CaptureFixture,
    no_training: None,
    command: str,
    path: tuple,
    fragment: bytes,
    expected: str,
) -> None:
    suite = sandbox.write("suite.yaml", mutate(BASE, path, fragment))
    err = sandbox.check(command, suite, capsys)
    assert err is not None and err.startswith(f"bench: error: {suite}: {expected}"), err


def test_a_merge_key_merges(sandbox: Sandbox, capsys: pytest.CaptureFixture) -> None:
    suite = sandbox.write(
        "suite.yaml", mutate(BASE, ("train", "schedule"), b"{<<: {name: piecewise, milestones: [3]}, gamma: 0.5}")
    )
    assert sandbox.check("validate", suite, capsys) is None


# includes that point nowhere useful: (include, the file the error names, the error after "FILE: ")
INCLUDES = [
    ("missing.yaml", "suite.yaml", "include: file not found"),
    (".", "suite.yaml", "include: not a regular file"),
    ("/dev/zero", "suite.yaml", "include: not a regular file"),
    ("fifo", "suite.yaml", "include: not a regular file"),  # reading it would block
    ("x" * 5000, "suite.yaml", "include: cannot read: File name too long"),
    ("suite.yaml", "suite.yaml", "include: cycle detected"),
    ("", "suite.yaml", "include: expected a file name"),
    ("garbage.yaml", "garbage.yaml", "not UTF-8 text (byte 0)"),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("include, named, expected", INCLUDES, ids=[i[:20] or "empty" for i, *_ in INCLUDES])
def test_includes_that_point_nowhere_useful(
    sandbox: Sandbox,
    capsys: pytest.CaptureFixture,
    no_training: None,
    command: str,
    include: str,
    named: str,
    expected: str,
) -> None:
    os.mkfifo(sandbox.root / "fifo")
    sandbox.write("garbage.yaml", b"\xff\xfe\x00garbage")
    suite = sandbox.write("suite.yaml", dump({"include": include, **BASE}))
    err = sandbox.check(command, suite, capsys, named=sandbox.root / named)
    assert err is not None and expected in err, err


@pytest.mark.parametrize(
    "target, expected",
    [("/dev/zero", "not a regular file"), (".", "not a regular file"), ("fifo", "not a regular file"),
     ("missing.yaml", "file not found")],
)  # fmt: skip
def test_a_suite_that_is_not_a_regular_file(
    sandbox: Sandbox, capsys: pytest.CaptureFixture, target: str, expected: str
) -> None:
    os.mkfifo(sandbox.root / "fifo")
    path = sandbox.root / target  # an absolute target replaces the root
    assert sandbox.check("validate", path, capsys) == f"bench: error: {path}: {expected}\n"
