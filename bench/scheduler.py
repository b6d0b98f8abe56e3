"""Run a plan's tasks: ready tasks (dependencies complete) are claimed in the store, run, released.

What to run is decided from the store at run time, not at planning time: a task whose entry exists
is skipped; one claimed by another live process is left to it, and this process runs other ready
tasks meanwhile, then waits for the entry (reusing it) or takes the task over when the claim
expires. N processes on one cache therefore run each task once. A failing task is reported with
its full traceback in a log file and cached nowhere; tasks that need its entry are skipped, the
rest of the grid still runs. ``debug=True`` re-raises instead.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError, DatasetMissingError
from bench.plan import Plan, Task
from bench.progress import Progress
from bench.store import Store, atomic_write_text

POLL_S = 0.5


@dataclass
class Outcome:
    task: Task
    status: str  # ran | cached | reused (finished by another process) | failed | skipped (a dependency failed)
    seconds: float = 0.0
    error: str = ""
    log: Path | None = None


@dataclass
class ScheduleResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, kind: str, status: str) -> int:
        return sum(o.task.kind == kind and o.status == status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_tasks(
    plan: Plan,
    store: Store,
    execute: Callable[[Task], None],
    progress: Progress,
    log_dir: Path,
    kinds: tuple[str, ...] = ("train", "analysis", "sanity", "eval"),
    debug: bool = False,
) -> ScheduleResult:
    """Run every task of ``plan`` of the given kinds (and what they need) once across all processes."""
    tasks = [t for t in plan.tasks if t.kind in kinds]
    result = ScheduleResult()
    total, finished = len(tasks), 0
    failed: set[str] = set()
    announced: set[str] = set()
    start = time.perf_counter()
    pending = list(tasks)
    while pending:
        waiting: list[Task] = []
        progressed = False
        for task in pending:
            if any(d in failed for d in task.deps):
                result.outcomes.append(Outcome(task, "skipped", error="a task it needs failed"))
                progressed, finished = True, finished + 1
                continue
            if not all(store.has("train", d) for d in task.deps):
                waiting.append(task)
                continue
            if store.has(task.kind, task.key):
                result.outcomes.append(Outcome(task, "reused" if task.key in announced else "cached"))
                progressed, finished = True, finished + 1
                continue
            if not store.try_claim(task.kind, task.key):
                if task.key not in announced:
                    info = store.claim_info(task.kind, task.key)
                    progress.log(f"  {task.label}: running elsewhere ({info.where() if info else '?'}); will reuse it")
                    announced.add(task.key)
                waiting.append(task)
                continue
            outcome = _run_one(task, store, execute, progress, log_dir, debug)
            result.outcomes.append(outcome)
            if outcome.status == "failed":
                failed.add(task.key)
            progressed, finished = True, finished + 1
            if outcome.status != "cached":
                elapsed = time.perf_counter() - start
                progress.log(f"[{finished}/{total}] {outcome.status} {task.label} ({outcome.seconds:.1f}s; {elapsed:.0f}s elapsed)")
        pending = waiting
        if pending and not progressed:
            time.sleep(POLL_S)
    return result


def _run_one(task: Task, store: Store, execute: Callable[[Task], None], progress: Progress, log_dir: Path, debug: bool) -> Outcome:
    t0 = time.perf_counter()
    try:
        if store.has(task.kind, task.key):  # finished by another process between our look and our claim
            return Outcome(task, "reused")
        progress.log(f"[{task.kind}] {task.label} ({task.key[:12]})")
        execute(task)
        return Outcome(task, "ran", time.perf_counter() - t0)
    except DatasetMissingError:
        raise
    except Exception as e:
        if debug:
            raise
        message = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
        log = log_dir / f"{task.kind}-{task.key[:12]}.log"
        atomic_write_text(log, f"{task.label} ({task.kind}/{task.key})\n\n{traceback.format_exc()}")
        progress.log(f"  FAILED (not cached): {task.label}: {message}\n  traceback: {log}")
        return Outcome(task, "failed", time.perf_counter() - t0, message, log)
    finally:
        store.release(task.kind, task.key)
