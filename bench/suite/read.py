"""Reading a suite file: strict YAML (no duplicate keys, 64-bit integers) and ``include:``.

``include: other.yaml`` (relative to the including file) is loaded first; keys of the including
file win (shallow merge); include cycles are rejected. :func:`load_raw` returns the merged
mapping and, for each top-level key, the file that set it (named in every error).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from bench.core.errors import ConfigError, show


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of silently keeping the last."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: SafeLoader merges (and checks) it
            continue
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):  # SafeLoader says "found unhashable key"
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {show(key)}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    """Integers of at most 64 bits (seeds and sizes: what torch accepts); never 5000 digits."""
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError as e:
        problem = str(e).split(";")[0]  # not Python's advice to raise its digit limit
        raise yaml.constructor.ConstructorError(None, None, f"not an integer: {problem}", node.start_mark) from None
    if not -(2**63) <= value < 2**64:
        raise yaml.constructor.ConstructorError(None, None, "integer out of range (more than 64 bits)", node.start_mark)
    return value


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file (directories, /dev/zero and FIFOs are never read)."""
    try:
        if path.is_file():
            return None
        return "not a regular file" if path.exists() else "file not found"
    except OSError as e:  # e.g. a name too long
        return f"cannot read: {e.strerror}"


def read_yaml(path: Path) -> dict[str, Any]:
    problem = file_problem(path)
    if problem:
        raise ConfigError(str(path), problem)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(str(path), f"invalid YAML at {where}: {problem}") from None
    except (RecursionError, ValueError) as e:  # ValueError: a date such as 2001-13-45
        problem = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ConfigError(str(path), f"invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "a suite must be a mapping of keys (name, dataset, model, ...)")
    return data


def load_raw(path: Path, stack: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Merged top-level mapping after includes, and for each key the file that set it."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(str(path), f"include: cycle detected ({chain})")
    data = read_yaml(path)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if "include" in data:
        inc = data["include"]
        if not isinstance(inc, str) or not inc:
            raise ConfigError(f"{path}: include", "expected a file name")
        inc_path = path.parent / Path(inc).expanduser()  # relative to the including file; ~ is the home directory
        problem = file_problem(inc_path)
        if problem:
            raise ConfigError(f"{path}: include", f"{problem}: {inc_path}")
        merged, sources = load_raw(inc_path, (*stack, resolved))
    for key, value in data.items():
        if key == "include":
            continue
        merged[key] = value
        sources[key] = str(path)
    return merged, sources

