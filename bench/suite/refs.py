"""Plug-ins named by a suite: importing its ``plugins:`` and parsing a reference to a registered one.

A reference is ``name`` or ``{name: {param: value}}``, with an optional ``preset:`` (a params
bundle registered with the plug-in); unknown names fail with a "did you mean".
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from bench.core import params as P
from bench.core.errors import ConfigError, show
from bench.registry import ATTACKS, Registry, RegistryError
from bench.suite.read import file_problem
from bench.suite.specs import PluginRef

_LOADED_PLUGINS: dict[str, object] = {}


def load_plugins(specs: list[str], base: Path, where: str) -> None:
    """Import plug-in modules (dotted names) or .py files (relative to the suite file) once each."""
    for i, spec in enumerate(specs):
        if not isinstance(spec, str):
            raise ConfigError(f"{where}[{i}]", f"expected a module name or .py file, got {show(spec)}")
        if spec.endswith(".py"):
            path = (base / Path(spec).expanduser()).resolve()
            key = str(path)
            if key in _LOADED_PLUGINS:
                continue
            problem = file_problem(path)
            if problem:
                raise ConfigError(f"{where}[{i}]", f"plug-in {problem}: {path}")
            # stable across processes, so a worker that loads the same file can unpickle its params
            mod_name = f"bench_plugin_{path.stem}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
            spec_obj = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec_obj)  # type: ignore[arg-type]
            sys.modules[mod_name] = module
            try:
                spec_obj.loader.exec_module(module)  # type: ignore[union-attr]
            except Exception as e:  # noqa: BLE001 - a broken plug-in is the user's error: say which
                sys.modules.pop(mod_name, None)
                raise ConfigError(f"{where}[{i}]", f"plug-in {spec} failed to import: {type(e).__name__}: {e}") from None
            _LOADED_PLUGINS[key] = module
        else:
            if spec in _LOADED_PLUGINS:
                continue
            try:
                _LOADED_PLUGINS[spec] = importlib.import_module(spec)
            except Exception as e:  # noqa: BLE001 - also "" and ".x" (ValueError, TypeError)
                raise ConfigError(f"{where}[{i}]", f"cannot import plug-in module {show(spec)}: {e}") from None


def parse_ref(registry: Registry, item: Any, where: str) -> PluginRef:
    """``name`` or ``{name: {param: value}}`` -> PluginRef with strictly parsed params.

    ``preset: NAME`` starts from a named params bundle registered with the plug-in (e.g.
    ``trades: {preset: official}``); other keys override it. An attack entry may also carry ``n_examples: N`` (not a parameter of the attack): it is then
    run on the first N of the suite's test examples (a nested subset), e.g. for AutoAttack on CPU;
    and ``shards: N``: its evaluations run as N tasks by sample, merged by sample id (``bench/plan/shards.py``).
    """
    if isinstance(item, str):
        name, overrides = item, None
    elif isinstance(item, dict) and len(item) == 1:
        name, overrides = next(iter(item.items()))
        if not isinstance(name, str):
            raise ConfigError(where, f"expected a {registry.kind} name, got {show(name)}")
    else:
        raise ConfigError(where, f"expected a {registry.kind} name or {{name: {{param: value}}}}, got {show(item)}")
    try:
        entry = registry.get(name)
    except RegistryError as e:
        raise ConfigError(where, str(e)) from None
    preset_name = overrides.get("preset") if isinstance(overrides, dict) else None
    if preset_name is not None:
        presets = entry.presets
        if not isinstance(preset_name, str) or preset_name not in presets:
            known = ", ".join(presets) or "none"
            hint = P.did_you_mean(preset_name, presets)
            raise ConfigError(f"{where}.{name}.preset", f"unknown preset {show(preset_name)}{hint}; {name} has: {known}")
        overrides = {**P.to_plain(presets[preset_name]), **{k: v for k, v in overrides.items() if k != "preset"}}
    special: dict[str, int] = {}  # n_examples, shards: how the attack is run, not its parameters
    for extra in ("n_examples", "shards"):
        if registry is ATTACKS and isinstance(overrides, dict) and extra in overrides:
            overrides = dict(overrides)
            value = special[extra] = overrides.pop(extra)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}.{name}.{extra}", f"expected a positive integer, got {show(value)}")
    params = P.build(entry.params, overrides, f"{where}.{name}")
    return PluginRef(registry.kind, name, params, entry.version, special.get("n_examples"), special.get("shards", 1))


def parse_ref_list(
    registry: Registry, items: Any, where: str, allow_empty: bool = False, indices: list[int] | None = None
) -> list[PluginRef]:
    """The references in the list ``items``; ``indices``: their positions in the suite's list (default 0, 1, ...)."""
    if not isinstance(items, list):
        raise ConfigError(where, f"expected a list, got {type(items).__name__}")
    if not items and not allow_empty:
        raise ConfigError(where, "must not be empty")
    index = indices or list(range(len(items)))
    refs = [parse_ref(registry, item, f"{where}[{i}]") for i, item in zip(index, items)]
    seen: set = set()
    for i, ref in zip(index, refs):
        key = (ref.name, ref.params, ref.n_examples, ref.shards)
        if key in seen:
            raise ConfigError(f"{where}[{i}]", f"duplicate entry {ref.name!r} with the same parameters")
        seen.add(key)
    return refs
