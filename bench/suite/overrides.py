"""``bench run --set KEY=VALUE``: set keys of a merged suite mapping before it is checked.

A value is YAML; a key is dotted, with list indexes (``defences.1.pgd_at.steps=5``); a plug-in
written by name becomes a mapping to take a parameter. The overrides, as text, are part of the
suite's digest and travel with each task (``bench.plan.tasks.SuiteRef``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from bench.core.errors import ConfigError, show
from bench.suite.read import StrictLoader

Overrides = Mapping[str, Any] | Iterable[str] | None


def normalize_overrides(overrides: Overrides) -> tuple[str, ...]:
    """``{"train.epochs": 2}`` or ``["train.epochs=2"]`` -> ``("train.epochs=2",)``: plain text that a
    task's ``SuiteRef`` carries to other processes. Mapping values are written as JSON (a YAML subset)."""
    if not overrides:
        return ()
    if isinstance(overrides, Mapping):
        items = []
        for key, value in overrides.items():
            try:
                items.append(f"{key}={json.dumps(value)}")
            except TypeError:
                raise ConfigError(f"--set {key}", f"expected plain YAML data (numbers, strings, lists, mappings), got {show(value)}") from None
        return tuple(items)
    if isinstance(overrides, str):
        overrides = [overrides]
    out = []
    for item in overrides:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError("--set", f"expected KEY=VALUE such as train.epochs=2, got {show(item)}")
        out.append(item)
    return tuple(out)


def _override_value(item: str, where: str) -> tuple[list[str], Any]:
    text = item.split("=", 1)[1]
    try:
        value = yaml.load(text, Loader=StrictLoader) if text.strip() else None
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(where, f"invalid YAML value {show(text)}: {problem}") from None
    parts = item.split("=", 1)[0].strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(where, "expected a dotted key such as train.epochs or defences.1.pgd_at.steps")
    return parts, value


def _child(node: Any, part: str, nxt: str, where: str) -> Any:
    """The container at ``node[part]`` for a path going on with ``nxt``; a missing or empty mapping is
    created, and a plug-in written by name (``- pgd_at``) becomes ``{pgd_at: {}}`` to take a parameter."""
    if isinstance(node, list):
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            raise ConfigError(where, f"{part} is not an index of a list of {len(node)}")
        index = int(part)
        if isinstance(node[index], str) and node[index] == nxt:
            node[index] = {nxt: {}}
        return node[index]
    if node.get(part) is None:
        node[part] = {}
    elif isinstance(node[part], str) and node[part] == nxt:  # dataset: cifar10 -> {cifar10: {...}}
        node[part] = {nxt: {}}
    return node[part]


def apply_overrides(raw: dict[str, Any], overrides: tuple[str, ...], path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged suite mapping with each ``KEY=VALUE`` set (YAML value, dotted key, list indexes),
    and for each top-level key the overrides that touched it (named in error messages)."""
    raw = copy.deepcopy(raw)  # YAML aliases share objects: set one place only
    touched: dict[str, str] = {}
    for item in overrides:
        where = f"{path}: --set {item.split('=', 1)[0].strip()}"
        parts, value = _override_value(item, where)
        if parts[0] == "include":
            raise ConfigError(where, "include cannot be overridden (includes are merged before --set applies)")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, parts[i + 1], where)
            if not isinstance(node, (dict, list)):
                raise ConfigError(where, f"{'.'.join(parts[: i + 1])} is {show(node)}, not a mapping or list")
        last = parts[-1]
        if isinstance(node, list):
            _child(node, last, "", where)  # checks the index
            node[int(last)] = value
        else:
            node[last] = value
        touched[parts[0]] = f"{touched.get(parts[0], '')} --set {item}"
    return raw, touched
