"""Where a suite's tasks run: ``local`` (sequential or N worker processes), ``ray`` or ``slurm``.

The choice lives outside the suite (``bench run --executor ...`` or ``--executor-config FILE``), so
a suite stays the same wherever it runs, and so does its leaderboard: every executor writes the
same entries into the shared cache. The ``ray`` and ``slurm`` modules import their engines lazily.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.core.errors import BenchError
from bench.engine.executors.base import Executor, WorkerResult, WorkerSpec, run_remote

EXECUTORS = ("local", "ray", "slurm")


@dataclass(frozen=True)
class ExecutorConfig:
    name: str = "local"
    workers: int | str = 1  # local: worker processes (1 = in this process), or "auto" (executors/local.py)
    ray_address: str | None = None  # ray: a running cluster (default: start a local one)
    ray_cpus: int | None = None  # ray: CPUs of the local cluster (default: all)
    ray_transfer: bool = False  # ray: no shared file system; entries travel through the object store (executors/transfer.py)
    slurm: dict[str, Any] = field(default_factory=dict)  # SlurmOptions fields

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise BenchError(f"--executor {self.name}: unknown (choose from {', '.join(EXECUTORS)})")
        if self.workers != "auto" and (isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1):
            raise BenchError(f"--workers: must be a positive number of processes or auto, got {self.workers!r}")
        if self.ray_transfer is not False and (self.name != "ray" or not isinstance(self.ray_transfer, bool)):
            raise BenchError(f"--ray-transfer: only for --executor ray (true or false), got {self.ray_transfer!r} with --executor {self.name}")
        if self.workers != 1 and self.name != "local":
            raise BenchError(f"--workers: only for --executor local (the {self.name} cluster decides how many run at once)")


def load_config(path: Path) -> dict[str, Any]:
    """An executor config file: ``executor: slurm`` plus ``workers``, ``ray_address``, ``ray_cpus``, ``ray_transfer``, ``slurm: {...}``."""
    from bench.engine.executors.slurm import SlurmOptions

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BenchError(f"{path}: cannot read the executor config ({type(e).__name__})") from None
    known = {"executor", "workers", "ray_address", "ray_cpus", "ray_transfer", "slurm"}
    if not isinstance(raw, dict) or set(raw) - known:
        bad = sorted(set(raw) - known) if isinstance(raw, dict) else ["(not a mapping)"]
        raise BenchError(f"{path}: unknown executor keys {', '.join(map(str, bad))} (known: {', '.join(sorted(known))})")
    slurm = raw.get("slurm") or {}
    fields = {f.name for f in dataclasses.fields(SlurmOptions)}
    if not isinstance(slurm, dict) or set(slurm) - fields:
        raise BenchError(f"{path}: slurm: unknown keys {sorted(set(slurm) - fields)} (known: {', '.join(sorted(fields))})")
    out = {k: v for k, v in raw.items() if k != "executor"}
    if "executor" in raw:
        out["name"] = raw["executor"]
    return out


def executor_config(path: Path | None = None, **overrides: Any) -> ExecutorConfig:
    """The config file's settings (if any) with the command line's (those not None) on top."""
    values = load_config(path) if path else {}
    slurm = {**values.pop("slurm", {}), **{k.removeprefix("slurm_"): v for k, v in overrides.items() if k.startswith("slurm_") and v is not None}}
    values.update({k: v for k, v in overrides.items() if not k.startswith("slurm_") and v is not None})
    return ExecutorConfig(**values, slurm=slurm)


def make_executor(config: ExecutorConfig, worker: WorkerSpec, ctx: Any = None) -> Executor:
    """The executor of ``config``; ``ctx`` (a ``WorkerContext``) runs tasks in this process."""
    if config.name == "local":
        from bench.engine.executors.local import Sequential, Workers

        if config.workers == "auto":
            raise BenchError("--workers auto: resolve it against the plan first (bench.api.run.run_suite does)")
        return Sequential(ctx) if config.workers == 1 else Workers(config.workers, worker)
    if config.name == "ray":
        from bench.engine.executors.ray import RayExecutor

        return RayExecutor(worker, config.ray_address, config.ray_cpus, transfer=config.ray_transfer)
    from bench.engine.executors.slurm import SlurmExecutor, SlurmOptions

    return SlurmExecutor(worker, SlurmOptions(**config.slurm))


__all__ = ["EXECUTORS", "Executor", "ExecutorConfig", "WorkerResult", "WorkerSpec", "executor_config", "load_config", "make_executor", "run_remote"]
