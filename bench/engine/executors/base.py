"""The executor interface and the one function every worker runs.

An executor decides only *where* a task runs. ``submit_all(tasks)`` returns one
``concurrent.futures.Future`` per task; the scheduler (``bench/engine/scheduler.py``) decides *what* runs
(readiness from the store, claims, failure propagation) and waits on the futures.

Out-of-process executors (``remote = True``) send plain data only: the task's ``SuiteRef``, its key
and a ``WorkerSpec``; the worker runs :func:`run_remote`, which claims the task in the shared store
and runs it (``bench.engine.worker.run_ref``): a task already done is not recomputed, one being computed by
another process is waited for. A task that raises comes back as a :class:`WorkerResult` carrying the
worker's message and traceback (never as a pickled exception, which Ray and submitit wrap
differently).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from bench.core.errors import BenchError, DatasetMissingError
from bench.plan.tasks import SuiteRef, Task


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs besides the task: plain data, valid on another machine with a shared file system."""

    cache_dir: str
    device: str = "auto"  # resolved on the worker (auto: its GPU when it has one)
    data_dir: str | None = None


@dataclass(frozen=True)
class WorkerResult:
    where: str  # host, pid and scheduler job id of the worker
    ran: bool = False  # False: the entry existed or another process computed it meanwhile
    error: str = ""  # one line; empty on success
    trace: str = ""  # the worker's traceback
    fatal: bool = False  # a missing dataset: stops the run, as in-process
    seconds: float = 0.0  # the task's time on the worker (no queueing)


def worker_location() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    array = os.environ.get("SLURM_ARRAY_TASK_ID")
    where = f"{socket.gethostname()} pid {os.getpid()}"
    return f"{where}, slurm job {job}{'_' + array if array else ''}" if job else where


def run_remote(ref: SuiteRef, key: str, worker: WorkerSpec) -> WorkerResult:
    """Run one task in this process from plain data; never raises for a failing task."""
    where, start = worker_location(), time.perf_counter()
    try:
        from bench.device.env import resolve_device
        from bench.engine.worker import run_ref

        ran = run_ref(ref, key, worker.cache_dir, resolve_device(worker.device), worker.data_dir)
        return WorkerResult(where, ran=ran, seconds=time.perf_counter() - start)
    except Exception as e:  # noqa: BLE001 - reported to the scheduler with the traceback
        message = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
        fatal = isinstance(e, DatasetMissingError)
        return WorkerResult(where, error=message, trace=traceback.format_exc(), fatal=fatal, seconds=time.perf_counter() - start)


class Executor:
    """Where tasks run. ``remote``: workers claim tasks themselves; else the scheduler claims them."""

    name = "?"
    remote = True
    slots: int | None = None  # tasks it runs at once, when known: the scheduler hands over no more (None: all ready ones)

    def submit(self, task: Task) -> Future:
        raise NotImplementedError

    def submit_all(self, tasks: Sequence[Task]) -> list[Future]:
        return [self.submit(t) for t in tasks]

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release what the executor started (worker processes, a local Ray cluster)."""


def missing_extra(extra: str, module: str) -> BenchError:
    return BenchError(f"--executor {extra}: the `{module}` package is missing; install the extra: pip install 'robustness-bench[{extra}]' (from a clone: pip install -e '.[{extra}]')")
