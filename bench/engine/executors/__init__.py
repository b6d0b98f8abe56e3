"""Where a suite's tasks run: a registry of executors (``local``, ``ray``, ``slurm``) and their options.

The choice lives outside the suite (``bench run --executor ...`` or ``--executor-config FILE``), so
a suite stays the same wherever it runs, and so does its leaderboard: every executor writes the
same entries into the shared cache. Each executor is one module that registers an
:class:`ExecutorSpec`: its name, a frozen options dataclass (which validates itself with one-line
errors), the command-line flags that set those options, where its options sit in the config file,
and a factory. :class:`ExecutorConfig` is a name plus one opaque options mapping; the config file,
the flags and :func:`make_executor` loop over :data:`EXECUTORS`. See ``bench/engine/executors/README.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.core.errors import BenchError
from bench.engine.executors.base import Executor, WorkerResult, WorkerSpec, run_remote

BUILTIN = ("bench.engine.executors.local", "bench.engine.executors.ray", "bench.engine.executors.slurm")


@dataclass(frozen=True)
class Flag:
    """A command-line flag setting the option ``option``; ``dest`` is ``<prefix><option>``."""

    name: str  # e.g. "--workers"
    option: str  # the options field it sets
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # argparse: type, metavar, help
    elsewhere: str | None = None  # an error when given (not its default) with another executor; {executor} is its name


@dataclass(frozen=True)
class ExecutorSpec:
    """An executor's contract (``bench/engine/executors/README.md``)."""

    name: str
    options: type  # a frozen dataclass with a default for every field; __post_init__ raises BenchError
    factory: Callable[[Any, WorkerSpec, Any], Executor]  # (options, worker, ctx) -> Executor
    doc: str = ""  # one line for --help and the README
    flags: tuple[Flag, ...] = ()
    prefix: str = ""  # flag destinations and flat config-file keys are <prefix><field> ("ray_address")
    section: str | None = None  # the config file holds the options as one mapping under this key ("slurm: {...}")
    in_process: Callable[[Any], bool] = lambda options: False  # tasks run in this process (the device is resolved here)
    here: Callable[[Any], bool] = lambda options: False  # tasks run on this machine (precision warnings apply)
    resolve: Callable[[Any, str, list, Callable[[str, str], bool]], dict[str, Any]] | None = None
    # (options, device, tasks, done) -> option values fixed against the plan (``--workers auto``)

    def fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]

    def file_keys(self) -> list[str]:
        """The config file's keys for this executor's options."""
        return [self.section] if self.section else [self.prefix + f for f in self.fields()]

    def build(self, options: Mapping[str, Any]) -> Any:
        """The options dataclass from a mapping; unknown keys and bad values are one-line BenchErrors."""
        unknown = sorted(set(options) - set(self.fields()))
        if unknown:
            raise BenchError(f"--executor {self.name}: unknown options {', '.join(unknown)} (known: {', '.join(self.fields())})")
        return self.options(**options)


class ExecutorRegistry:
    """The executors by name, in registration order (the built-ins are imported on first use)."""

    def __init__(self) -> None:
        self._specs: dict[str, ExecutorSpec] = {}
        self._loaded = False

    def register(self, spec: ExecutorSpec) -> ExecutorSpec:
        prev = self._specs.get(spec.name)
        if prev is not None and prev.factory.__module__ != spec.factory.__module__:  # a re-imported module replaces its own
            raise BenchError(f"executor {spec.name!r} is already registered (by {prev.factory.__module__})")
        if not dataclasses.is_dataclass(spec.options) or not spec.options.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise BenchError(f"executor {spec.name!r}: options must be a frozen dataclass")
        missing = [f.name for f in dataclasses.fields(spec.options) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise BenchError(f"executor {spec.name!r}: option {missing[0]!r} needs a default")
        self._specs[spec.name] = spec
        return spec

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in BUILTIN:
                importlib.import_module(module)
            order = {m: i for i, m in enumerate(BUILTIN)}  # the built-ins first, whichever was imported first
            self._specs = dict(sorted(self._specs.items(), key=lambda kv: order.get(kv[1].factory.__module__, len(order))))

    def names(self) -> list[str]:
        self._load()
        return list(self._specs)

    def specs(self) -> list[ExecutorSpec]:
        self._load()
        return list(self._specs.values())

    def get(self, name: str) -> ExecutorSpec:
        self._load()
        if name not in self._specs:
            raise BenchError(f"--executor {name}: unknown (choose from {', '.join(self._specs)})")
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._specs

    def unregister(self, name: str) -> None:
        """For tests only."""
        self._specs.pop(name, None)


EXECUTORS = ExecutorRegistry()


@dataclass(frozen=True)
class ExecutorConfig:
    """Where tasks run: an executor's name and its options (validated by its spec)."""

    name: str = "local"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec.build(self.options)

    @property
    def spec(self) -> ExecutorSpec:
        return EXECUTORS.get(self.name)

    @property
    def built(self) -> Any:
        """The options dataclass."""
        return self.spec.build(self.options)

    @property
    def in_process(self) -> bool:
        return self.spec.in_process(self.built)

    @property
    def on_this_machine(self) -> bool:
        return self.spec.here(self.built)

    def resolved(self, device: str, tasks: list, done: Callable[[str, str], bool]) -> ExecutorConfig:
        """The config with the options that depend on the plan fixed (``--workers auto``)."""
        fix = self.spec.resolve(self.built, device, tasks, done) if self.spec.resolve else {}
        return dataclasses.replace(self, options={**self.options, **fix}) if fix else self


def load_config(path: Path) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """An executor config file: ``executor: NAME`` and each executor's options (flat keys such as
    ``workers`` and ``ray_address``, or a mapping such as ``slurm: {...}``), as (name, {executor: options})."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BenchError(f"{path}: cannot read the executor config ({type(e).__name__})") from None
    known = {"executor"} | {k for spec in EXECUTORS.specs() for k in spec.file_keys()}
    if not isinstance(raw, dict) or set(raw) - known:
        bad = sorted(set(raw) - known) if isinstance(raw, dict) else ["(not a mapping)"]
        raise BenchError(f"{path}: unknown executor keys {', '.join(map(str, bad))} (known: {', '.join(sorted(known))})")
    options: dict[str, dict[str, Any]] = {}
    for spec in EXECUTORS.specs():
        if spec.section:
            section = raw.get(spec.section) or {}
            fields = set(spec.fields())
            if not isinstance(section, dict) or set(section) - fields:
                bad = sorted(set(section) - fields) if isinstance(section, dict) else ["(not a mapping)"]
                raise BenchError(f"{path}: {spec.section}: unknown keys {bad} (known: {', '.join(sorted(fields))})")
            options[spec.name] = dict(section)
        else:
            options[spec.name] = {f: raw[spec.prefix + f] for f in spec.fields() if spec.prefix + f in raw}
    return raw.get("executor"), options


def flag_values(args: Any) -> dict[str, Any]:
    """Every executor flag's value from parsed command-line ``args`` (None where not given)."""
    return {spec.prefix + flag.option: getattr(args, spec.prefix + flag.option, None) for spec in EXECUTORS.specs() for flag in spec.flags}


def executor_config(path: Path | None = None, **overrides: Any) -> ExecutorConfig:
    """The config file's settings (if any) with the command line's (those not None) on top; ``overrides``
    are ``name`` and the flags' destinations (``workers``, ``ray_address``, ``slurm_gpus``, ...)."""
    name, options = load_config(path) if path else (None, {})
    if overrides.get("name") is not None:
        name = overrides["name"]
    for spec in EXECUTORS.specs():
        given = {f: overrides[spec.prefix + f] for f in spec.fields() if overrides.get(spec.prefix + f) is not None}
        options[spec.name] = {**options.get(spec.name, {}), **given}
    chosen = EXECUTORS.get(name or "local").name
    for spec in EXECUTORS.specs():
        own = options.get(spec.name, {})
        for flag in spec.flags:
            if spec.name != chosen and flag.elsewhere and flag.option in own:
                value = getattr(spec.build({flag.option: own[flag.option]}), flag.option)
                if value != getattr(spec.options(), flag.option):
                    raise BenchError(f"{flag.name}: {flag.elsewhere.format(executor=chosen)}")
    return ExecutorConfig(chosen, options.get(chosen, {}))


def make_executor(config: ExecutorConfig, worker: WorkerSpec, ctx: Any = None) -> Executor:
    """The executor of ``config``; ``ctx`` (a ``WorkerContext``) runs tasks in this process."""
    return config.spec.factory(config.built, worker, ctx)


def add_flags(group: Any, executor_config_flag: Callable[[Any], None] | None = None) -> None:
    """``--executor``, then (``executor_config_flag``) ``--executor-config``, then every executor's flags, on an argparse group."""
    names = EXECUTORS.names()
    choice = f"{names[0]} (default), {', '.join(names[1:-1])} or {names[-1]}" if len(names) > 2 else " or ".join(names)
    group.add_argument("--executor", choices=names, default=None, help=choice)
    if executor_config_flag:
        executor_config_flag(group)
    for spec in EXECUTORS.specs():
        for flag in spec.flags:
            group.add_argument(flag.name, dest=spec.prefix + flag.option, default=None, **flag.kwargs)


__all__ = [
    "EXECUTORS", "Executor", "ExecutorConfig", "ExecutorSpec", "Flag", "WorkerResult", "WorkerSpec", "add_flags",
    "executor_config", "flag_values", "load_config", "make_executor", "run_remote",
]  # fmt: skip
