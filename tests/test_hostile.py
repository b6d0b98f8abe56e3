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
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench.commands.cli import main
from tests.conftest import ROOT, SUITES

# the smoke suite with a paper table, so that the fuzz reaches bench/report/papers.py too
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
    import bench.api.run

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a hostile suite got past validation")

    monkeypatch.setattr(bench.api.run, "run_suite", refuse)


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
    (("threat", "eps"), b'"2\\n"', "threat.eps: must be in (0, 1] for Linf (pixel space), got '2\\n'"),
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


@pytest.mark.parametrize(
    "command, path, fragment, expected",
    [
        ("run", ("name",), b"'../../escape'", "name: expected a folder name"),
        ("run", ("defences",), LAUGHS, "defences[0]: expected a defence name"),
        ("validate", ("train",), b"[" * 1000 + b"]" * 1000, "invalid YAML: nested too deeply"),
    ],
    ids=["run-dotdot-name", "run-billion-laughs", "validate-deep-nesting"],
)
def test_the_real_command_line(sandbox: Sandbox, command: str, path: tuple, fragment: bytes, expected: str) -> None:
    """``python -m bench``: exit code 2, one line, no traceback, nothing written (BENCH_CACHE included)."""
    suite = sandbox.write("suite.yaml", mutate(BASE, path, fragment))
    before = sorted(sandbox.root.rglob("*"))
    argv = [sys.executable, "-m", "bench", *sandbox.argv(command, suite)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    err = proc.stderr
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.startswith(f"bench: error: {suite}: {expected}") and len(err.splitlines()) == 1, err
    assert sorted(sandbox.root.rglob("*")) == before


# ------------------------------------------------------------------------------------ properties


def fuzz(examples: int) -> settings:
    # the function-scoped fixtures are safe to share: capsys is read and the sandbox checked after every example
    return settings(
        max_examples=examples, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
    )


RAW_FRAGMENTS = [
    b"[" * 1000 + b"]" * 1000,  # 1000-deep lists
    b"{a: " * 1000 + b"1" + b"}" * 1000,
    LAUGHS,
    b"&r [*r]",  # a list that contains itself
    b"*undefined",
    b"!!python/object/apply:os.system ['echo pwned']",
    b"!!python/name:os.system",
    b"!custom 1",
    b"!!binary aGVsbG8=",
    b"!!set {a, b}",
    b"!!omap [a: 1, b: 2]",
    b"!!timestamp 2001-12-14",
    b"2001-13-45",  # a timestamp the constructor rejects
    b"9" * 5000,  # more digits than Python converts
    b"0x" + b"f" * 5000,  # a 20000-bit integer
    b"1" + b"0" * 100,  # 10^100
    b"18446744073709551616",  # 2^64
    b"'1e999999999'",  # a string Fraction would expand to a billion digits
    b"'1e400'",
    b"'8/0'",
    b".nan",
    b"-.inf",
    b"{a: 1, a: 2}",  # duplicate keys
    b"{? [a, b] : 1}",  # an unhashable key
    b"{<<: 5}",
    b'"\\0"',
    b'"\\ud800"',  # a lone surrogate
    b'"a\\nb"',
    b"\xff\xfe",  # not UTF-8
    b"[unclosed",
    b"'" + b"x" * 100_000 + b"'",
]
ABSURD = [None, True, False, 0, -1, -(2**63), 2**64 - 1, -0.0, 1e308, -1e-300, math.nan, math.inf, -math.inf,
          "", " ", "\x00", "../../etc", "/abs/path", "8/255/2", "1/0", "nan", "-inf", "x" * 10_000,
          [], {}, [[]], {"": None}]  # fmt: skip

INT64 = st.integers(-(2**63), 2**63 - 1)  # larger ones fail when the YAML is read (see REGRESSIONS)
scalars = st.one_of(
    st.none(), st.booleans(), INT64, st.floats(), st.text(max_size=20), st.binary(max_size=8), st.dates(),
    st.sampled_from(ABSURD),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | INT64, inner, max_size=3),
    max_leaves=8,
)
hostile = values.map(flow) | st.sampled_from(RAW_FRAGMENTS)
UNKNOWN_KEYS = st.one_of(st.text(max_size=8).map(lambda s: "~" + s), INT64, st.none(), st.booleans(), st.floats())
# a mapping whose keys no schema knows: invalid wherever it is put
invalid = st.dictionaries(UNKNOWN_KEYS, values, min_size=1, max_size=2).map(flow)
PATHS = key_paths(BASE)


@fuzz(200)
@given(command=st.sampled_from(["validate", "run-dry"]), path=st.sampled_from(PATHS), fragment=hostile)
def test_any_value_anywhere_is_accepted_or_rejected_in_one_line(
    sandbox: Sandbox, capsys: pytest.CaptureFixture, command: str, path: tuple, fragment: bytes
) -> None:
    suite = sandbox.write("suite.yaml", mutate(BASE, path, fragment))
    err = sandbox.check(command, suite, capsys)
    where = None if err is None else re.split(r"[:.\[]", err.removeprefix(f"bench: error: {suite}: "))[0]
    event("accepted" if err is None else f"rejected at {where[:16]}")


@fuzz(150)
@given(
    command=st.sampled_from(["validate", "run"]),
    path=st.sampled_from(PATHS),
    fragment=invalid,
    via_include=st.booleans(),
)
def test_a_value_of_the_wrong_shape_is_rejected_naming_file_and_field(
    sandbox: Sandbox,
    capsys: pytest.CaptureFixture,
    no_training: None,
    command: str,
    path: tuple,
    fragment: bytes,
    via_include: bool,
) -> None:
    text = mutate(BASE, path, fragment)
    if via_include:  # the error names the included file, which holds the bad value
        named = sandbox.write("protocol.yaml", text)
        suite = sandbox.write("suite.yaml", "include: protocol.yaml\n")
    else:
        named = suite = sandbox.write("suite.yaml", text)
    err = sandbox.check(command, suite, capsys, named=named)
    assert err is not None, "accepted"
    assert err.startswith(f"bench: error: {named}: {field(path)}"), (field(path), err)


@fuzz(60)
@given(command=st.sampled_from(["validate", "run"]), garbage=st.binary(max_size=200))
def test_garbage_bytes_are_rejected(
    sandbox: Sandbox, capsys: pytest.CaptureFixture, no_training: None, command: str, garbage: bytes
) -> None:
    assert sandbox.check(command, sandbox.write("suite.yaml", garbage), capsys) is not None


@fuzz(60)
@given(data=st.data(), junk=st.binary(min_size=1, max_size=4))
def test_bytes_spliced_into_a_valid_suite(
    sandbox: Sandbox, capsys: pytest.CaptureFixture, data: st.DataObject, junk: bytes
) -> None:
    text = dump(BASE).encode()
    at = data.draw(st.integers(0, len(text)), label="at")
    sandbox.check("validate", sandbox.write("suite.yaml", text[:at] + junk + text[at:]), capsys)


NAMES = ["..", "../x", "../../etc/passwd", "/tmp/x", "a/b", "a\\..\\b", "a\x00b", "x" * 101, "-rf", " x", "x\n", "\ud800"]  # fmt: skip


@fuzz(60)
@given(name=st.text(max_size=120) | st.from_regex(r"[\w./\\+-]{1,120}", fullmatch=True) | st.sampled_from(NAMES))
def test_an_accepted_name_is_one_folder_inside_the_results(
    sandbox: Sandbox, capsys: pytest.CaptureFixture, name: str
) -> None:
    suite = sandbox.write("suite.yaml", dump({**BASE, "name": name}))
    err = sandbox.check("validate", suite, capsys)
    if err is None:
        results = (sandbox.root / "results").resolve()
        assert (results / name).resolve().parent == results and "\x00" not in name and len(name.encode()) <= 255
    else:
        assert err.startswith(f"bench: error: {suite}: name: "), err
