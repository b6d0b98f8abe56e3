"""A task a worker reports finished must show its entry in the driver's store, or the run stops.

Out-of-process workers (worker processes, Ray, Slurm) write their entry into the cache themselves;
the driver only sees it through its own view of the cache. When that view is not the workers' (a
Ray or Slurm node whose cache path is a local disk, not the driver's file system), every task
"finishes" and nothing ever arrives: the scheduler would wait forever for entries the tasks after
them need. :class:`Arrivals` holds each finished task until its entry is visible here and stops the
run, in one line naming the node, when it has not appeared within ``GRACE_S`` seconds (a shared file
system's attribute cache may delay it a little: ``BENCH_ENTRY_GRACE_S``, default 10).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.core.errors import BenchError

GRACE_S = float(os.environ.get("BENCH_ENTRY_GRACE_S", "10"))


class EntryNotVisibleError(BenchError):
    """A worker finished a task but its entry is not in the driver's cache: the nodes do not share it."""


@dataclass
class _Awaited:
    outcome: Any  # scheduler.Outcome
    where: str
    deadline: float


def node_of(where: str) -> str:
    """The host of a worker's ``where`` (``"host pid 12, slurm job 3"`` -> ``host``)."""
    return where.split(" pid ", 1)[0].split(",", 1)[0].strip() or "?"


def advice(executor: str) -> str:
    if executor == "ray":
        return "use --ray-transfer (entries travel through Ray's object store) or put --cache-dir on a file system every node mounts"
    if executor == "slurm":
        return "put --cache-dir on a file system every node mounts (the Slurm jobs write there)"
    return "the workers write to another cache than this process reads (check --cache-dir and the workers' file system)"


class Arrivals:
    """Finished outcomes waiting for their entry to be visible in the driver's store."""

    def __init__(self, root: Any, executor: str, grace_s: float | None = None) -> None:
        self.root, self.executor = root, executor
        self.grace_s = GRACE_S if grace_s is None else grace_s
        self.waiting: list[_Awaited] = []

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def expect(self, outcome: Any, where: str) -> None:
        self.waiting.append(_Awaited(outcome, where, time.monotonic() + self.grace_s))

    def arrived(self, present: Callable[[Any], bool]) -> Iterator[tuple[Any, str]]:
        """The outcomes whose entry is now present; raises when one is overdue (the run cannot progress)."""
        left = []
        for item in self.waiting:
            if present(item.outcome.task):
                yield item.outcome, item.where
            elif time.monotonic() > item.deadline:
                task = item.outcome.task
                raise EntryNotVisibleError(
                    f"the worker on node {node_of(item.where)} finished {task.label} ({task.kind}/{task.key[:12]}) but its entry is not in "
                    f"the driver's cache at {self.root / task.kind / task.key} after {self.grace_s:.0f}s: the nodes do not share the cache's "
                    f"file system; {advice(self.executor)}"
                )
            else:
                left.append(item)
        self.waiting = left
