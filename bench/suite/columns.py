"""The evaluation entries of ``attacks:`` that are not attacks: common corruptions and external adversarial examples.

``attacks:`` holds, besides attacks, two kinds of entries, each a column computed per sample:

* ``- corruption: {name: gaussian_noise, severity: 3}``: accuracy on the test images under a common
  corruption (Hendrycks & Dietterich, ICLR 2019). ``severity`` is one of 1..5 or a list (default: all
  five); ``name: common-15`` (or ``- corruption: common-15``) is the benchmark's 15 corruptions.
  ``source``: ``generated`` (``bench/data/corruptions``, any dataset, seeded per test image) or
  ``released`` (the CIFAR-10-C / CIFAR-100-C files, ``bench/data/cifar_c.py``); the default is
  ``released`` for cifar10 and cifar100, whose published numbers come from those files, else ``generated``.
  A corruption column is not an attack: its own leaderboard group, never in the worst case.
* ``- external: {path: advs.pt, name: adaptive}`` (or ``- external: advs.pt``): adversarial examples your
  own attack made (``bench/evaluation/external.py``), the path relative to the suite file, keyed by the
  file's content; a column of the worst case. ``name`` is the column (default ``external:<file name>``).
  A path with ``{row}`` and/or ``{seed}`` (``adaptive/{row}-seed{seed}.pt``) names one file per
  leaderboard row and seed: your attack run on each trained model (``bench.trained_models``). Such files
  may not exist yet (the models are trained first): a row without its file has its external cell and its
  worst case left empty (not evaluated), and the leaderboard says which files it waits for. A path without
  them must exist when the suite is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.core import params as P
from bench.core.errors import ConfigError, show
from bench.core.files import sha256_file
from bench.data import cifar_c
from bench.data.corruptions import (
    NAMES as COMMON_15,  # the benchmark's 15, in the paper's order (mean and mCE are over these)
)
from bench.data.corruptions import SEVERITIES
from bench.registry import ATTACKS, CORRUPTIONS
from bench.suite.read import file_problem
from bench.suite.refs import parse_ref_list
from bench.suite.specs import CorruptionRef, ExternalRef, PluginRef

KINDS = ("corruption", "external")
PRESETS = {"common-15": COMMON_15}
RELEASED_FOR = tuple(cifar_c.FOLDERS)  # datasets with released corruption files
RELEASED_ONLY = cifar_c.EXTRA  # in the released files, not generated
RELEASED_VERSION = 1


def is_column(item: Any) -> bool:
    """Whether an ``attacks:`` item is a corruption or external entry (a one-key mapping with one of those keys)."""
    return isinstance(item, dict) and len(item) == 1 and next(iter(item)) in KINDS


def parse_entries(
    items: Any, where: str, base: Path, dataset: str, allow_empty: bool = True
) -> tuple[list[PluginRef], list[CorruptionRef], list[ExternalRef]]:
    """An ``attacks:`` list: its attacks (``bench/suite/refs.py``, errors naming their place in the list) and its
    corruption and external entries. ``allow_empty``: whether a list without attacks is accepted when it has no
    other entry either (a list of columns only is always accepted)."""
    if not isinstance(items, list):
        raise ConfigError(where, f"expected a list, got {type(items).__name__}")
    plain = [i for i, a in enumerate(items) if not is_column(a)]
    attacks = parse_ref_list(ATTACKS, [items[i] for i in plain], where, allow_empty=allow_empty or len(plain) < len(items), indices=plain)
    corruptions, externals = parse_columns([(i, a) for i, a in enumerate(items) if is_column(a)], where, base, dataset)
    return attacks, corruptions, externals


def parse_columns(
    items: list[tuple[int, Any]], where: str, base: Path, dataset: str
) -> tuple[list[CorruptionRef], list[ExternalRef]]:
    """The corruption and external entries ``(index in attacks:, item)`` of a suite's ``attacks:`` list."""
    corruptions: list[CorruptionRef] = []
    externals: list[ExternalRef] = []
    for i, item in items:
        kind, value = next(iter(item.items()))
        at = f"{where}[{i}].{kind}"
        if kind == "corruption":
            for ref in corruption_refs(value, at, dataset):
                if ref in corruptions:
                    raise ConfigError(at, f"duplicate corruption column {ref.label!r} ({ref.source})")
                corruptions.append(ref)
        else:
            ref = external_ref(value, at, base)
            if any(e.label == ref.label for e in externals):
                raise ConfigError(at, f"duplicate external column {ref.label!r}; give each a distinct name")
            externals.append(ref)
    return corruptions, externals


def corruption_refs(value: Any, where: str, dataset: str) -> list[CorruptionRef]:
    """``name`` / ``common-15`` / ``{name|preset, severity, source}`` -> one ref per (corruption, severity)."""
    raw = {"name": value} if isinstance(value, str) else value
    if not isinstance(raw, dict):
        raise ConfigError(
            where, f"expected a corruption name, common-15 or {{name: ..., severity: 1-5}}, got {show(value)}"
        )
    for key in raw:
        if key not in ("name", "preset", "severity", "source"):
            raise ConfigError(
                f"{where}.{key}",
                f"unknown key{P.did_you_mean(key, ('name', 'severity', 'source'))}; allowed: name, severity, source",
            )
    name = raw.get("name", raw.get("preset"))
    if "name" in raw and "preset" in raw:
        raise ConfigError(where, "give name or preset, not both")
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name", f"expected a corruption name or {', '.join(PRESETS)}, got {show(name)}")
    source = raw.get("source", "released" if dataset in RELEASED_FOR else "generated")
    if source not in ("generated", "released"):
        raise ConfigError(f"{where}.source", f"expected generated or released, got {show(source)}")
    if source == "released" and dataset not in RELEASED_FOR:
        raise ConfigError(
            f"{where}.source",
            f"released corruption files exist for {', '.join(RELEASED_FOR)} only, not {dataset}; use source: generated",
        )
    names = PRESETS.get(name, (name,))
    known = (*CORRUPTIONS.names(), *(RELEASED_ONLY if source == "released" else ()))
    if name not in PRESETS and name not in known:
        if source == "generated" and name in RELEASED_ONLY:
            raise ConfigError(
                f"{where}.name",
                f"{name} exists only in the released files (source: released); generated: {', '.join(CORRUPTIONS.names())}",
            )
        hint = P.did_you_mean(name, [*known, *PRESETS])
        raise ConfigError(
            f"{where}.name", f"unknown corruption {show(name)}{hint}; known: {', '.join(PRESETS)}, {', '.join(known)}"
        )
    severities = _severities(raw.get("severity", list(SEVERITIES)), f"{where}.severity")
    refs = []
    for n in names:
        version = RELEASED_VERSION if source == "released" else CORRUPTIONS.get(n).version
        refs.extend(CorruptionRef(n, s, source, version) for s in severities)
    return refs


def _severities(value: Any, where: str) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(s, bool) or s not in SEVERITIES for s in items):
        raise ConfigError(where, f"expected a severity 1 to 5 or a list of them, got {show(value)}")
    if len(set(items)) != len(items):
        raise ConfigError(where, f"severity listed twice in {show(value)}")
    return list(items)


def external_ref(value: Any, where: str, base: Path) -> ExternalRef:
    """``advs.pt`` or ``{path: advs.pt, name: column}``: the file found and hashed now (checked against the test
    images before anything runs: ``check_externals`` in ``bench/engine/worker.py``, and again by the task that evaluates it)."""
    raw = {"path": value} if isinstance(value, str) else value
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected a file name or {{path: advs.pt, name: ...}}, got {show(value)}")
    for key in raw:
        if key not in ("path", "name"):
            raise ConfigError(
                f"{where}.{key}", f"unknown key{P.did_you_mean(key, ('path', 'name'))}; allowed: path, name"
            )
    text = raw.get("path")
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{where}.path", f"expected a .pt file name, got {show(text)}")
    path = (base / Path(text).expanduser()).resolve()  # relative to the suite file; ~ expanded
    label = raw.get("name", f"external:{path.name}")
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"{where}.name", f"expected a column name, got {show(label)}")
    try:
        template = str(path) != str(path).format(row="r", seed=0)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"{where}.path", f"only {{row}} and {{seed}} may be filled in, got {show(text)} ({type(e).__name__}: {e})"
        ) from None
    if template:
        return ExternalRef(label, path, "", template=True)
    problem = file_problem(path)
    if problem:
        raise ConfigError(f"{where}.path", f"{problem}: {path}")
    return ExternalRef(label, path, sha256_file(path))


UNSAFE = re.compile(r"[^A-Za-z0-9._+=,()-]")


def row_file(ref: ExternalRef, row: str, seed: int) -> Path:
    """Where a template's file for leaderboard row ``row`` and ``seed`` is: ``{row}`` with every character but
    letters, digits and ``. _ + = , ( ) -`` written ``_`` (``pgd_at(eps=8/255)`` -> ``pgd_at(eps=8_255)``)."""
    return Path(str(ref.path).format(row=UNSAFE.sub("_", row), seed=seed))


def for_row(ref: ExternalRef, row: str, seed: int) -> ExternalRef | None:
    """The external column of one (row, seed): the ref itself, or a template's file for them (None: not there yet)."""
    if not ref.template:
        return ref
    path = row_file(ref, row, seed)
    return ExternalRef(ref.label, path, sha256_file(path)) if path.is_file() else None
