"""Run a plan's tasks: ready tasks (dependencies complete) are claimed in the store, run, released.

What to run is decided from the store at run time, not at planning time: a task whose entry exists
is skipped; one claimed by another live process is left to it, and this process runs other ready
tasks meanwhile, then waits for the entry (reusing it) or takes the task over when the claim
expires. N processes on one cache therefore run each task once. A failing task is reported with
its full traceback in a log file and cached nowhere; tasks that need its entry are skipped, the
rest of the grid still runs. ``debug=True`` re-raises instead. A task a remote worker reports
finished whose entry never shows in this process's store stops the run (``bench/engine/arrivals.py``).

With more ready tasks than free slots, the longest chains of work start first, by the run's
estimator (``bench/plan/estimate.py``, the one the progress display's ETA reads); the scheduler
records each computed task's time in it.
"""

from __future__ import annotations

import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.errors import BenchError, DatasetMissingError
from bench.core.files import atomic_write_text
from bench.core.progress import Progress
from bench.engine.arrivals import Arrivals
from bench.engine.executors.base import Executor, WorkerResult
from bench.engine.store import Store
from bench.plan import kinds as task_kinds
from bench.plan.estimate import Estimator
from bench.plan.tasks import Plan, Task, readers, unneeded

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
    executor: Executor,
    progress: Progress,
    log_dir: Path,
    kinds: tuple[str, ...] | None = None,
    debug: bool = False,
) -> ScheduleResult:
    """Run every task of ``plan`` of the given kinds (default: every declared kind, ``bench/plan/kinds.py``)
    and what they need, once across all processes.

    Ready tasks go to ``executor`` (``bench/engine/executors``), which decides only where they run. For an
    in-process executor this process claims each task; remote workers claim their own (``run_ref``).
    The estimator is ``progress.estimator`` (one with no priors, attached to it, when it has none).
    """
    wanted = task_kinds.names() if kinds is None else kinds
    tasks = [t for t in plan.tasks if t.kind in wanted]
    if progress.estimator is None:
        progress.estimator = Estimator()  # the durations measured in this run only
    estimator: Estimator = progress.estimator
    result = ScheduleResult()
    failed: set[str] = set()
    announced: set[str] = set()
    running: dict[Future, tuple[Task, float]] = {}
    pending = list(tasks)
    needed_by = readers(tasks)
    arrivals = Arrivals(store.root, executor.name)  # remote workers' entries, until the driver sees them

    progress.start_plan(tasks)  # done / total and the ETA over every kind of task

    def finish(outcome: Outcome, where: str = "") -> None:
        result.outcomes.append(outcome)
        if outcome.status == "failed":
            failed.add(outcome.task.key)
        if outcome.status == "ran":
            estimator.ran(outcome.task, outcome.seconds)
        progress.finished(outcome.task, outcome.status, outcome.seconds, where)

    while pending or running or arrivals:
        waiting: list[Task] = []
        ready: list[Task] = []
        for task in pending:
            needs = task.needs
            if store.has(task.kind, task.key):  # (what it needs may be gone: a shared start not kept)
                finish(Outcome(task, "reused" if task.key in announced else "cached"))
                continue
            if any(k in failed for _, k in needs):
                finish(Outcome(task, "skipped", error="a task it needs failed"))
                continue
            if not all(store.has(kind, k) for kind, k in needs):
                waiting.append(task)
                continue
            if unneeded(task, needed_by, store.has):
                finish(Outcome(task, "cached"))  # every task that would read it is done: not needed
                continue
            if ready and not executor.remote:  # in-process: one task at a time, claimed just before it runs
                waiting.append(task)
                continue
            if executor.remote and executor.slots is not None and len(running) >= executor.slots:
                waiting.append(task)  # every slot busy: it is handed over when one frees
                continue
            if not _claim(task, store, executor.remote):
                if task.key not in announced:
                    info = store.claim_info(task.kind, task.key)
                    progress.log(f"  {task.label}: running elsewhere ({info.where() if info else '?'}); will reuse it")
                    announced.add(task.key)
                waiting.append(task)
                continue
            if not executor.remote and store.has(task.kind, task.key):  # finished elsewhere between look and claim
                store.release(task.kind, task.key)
                finish(Outcome(task, "reused"))
                continue
            ready.append(task)
        if executor.remote:  # the longest chain of work first, and no more than the executor runs at once
            ready = critical_first(ready, needed_by, estimator)
            free = len(ready) if executor.slots is None else max(executor.slots - len(running), 0)
            ready, later = ready[:free], ready[free:]
            waiting.extend(later)
        for task in ready:
            progress.log(f"[{task.kind}] {task.label} ({task.key[:12]})")
            progress.started(task)
        t0 = time.perf_counter()
        for task, future in zip(ready, executor.submit_all(ready)):
            running[future] = (task, t0)
        pending = waiting
        if running:
            finished, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                task, t0 = running.pop(future)
                if not executor.remote:
                    store.release(task.kind, task.key)
                outcome, where = _outcome(task, future, time.perf_counter() - t0, progress, log_dir, debug)
                if executor.remote and outcome.status in ("ran", "reused"):
                    arrivals.expect(outcome, where)
                else:
                    finish(outcome, where)
        elif (pending or arrivals) and not ready:
            time.sleep(POLL_S)
        for outcome, where in list(arrivals.arrived(lambda t: store.has(t.kind, t.key) or unneeded(t, needed_by, store.has))):
            finish(outcome, where)
    return result


def critical_first(ready: list[Task], needed_by: dict[str, list[Task]], estimator: Estimator) -> list[Task]:
    """``ready`` ordered by the expected seconds of the longest chain of tasks each one starts.

    A chain is a task and the tasks that need it, transitively (a training, then its evaluations);
    seconds are ``estimator.estimate`` (measured, else the FLOP-model prior; 1 s when unknown). With
    fewer slots than ready tasks this keeps the trainings, which unlock everything else, ahead of
    short evaluations, and starts the long evaluations before the short ones (the finish is not
    left to one long task on an otherwise idle machine). Ties keep the plan's order.
    """
    if len(ready) < 2:
        return ready
    chain: dict[str, float] = {}

    def length(task: Task) -> float:
        if task.key not in chain:
            chain[task.key] = (estimator.estimate(task) or 1.0) + max(map(length, needed_by.get(task.key, ())), default=0.0)
        return chain[task.key]

    return sorted(ready, key=lambda t: -length(t))


def failure_log(log_dir: Path, task: Task) -> Path:
    """Where the traceback of a failed ``task`` is written (and ``bench status`` looks for it)."""
    return log_dir / f"{task.kind}-{task.key[:12]}.log"


def _claim(task: Task, store: Store, remote: bool) -> bool:
    """Claim ``task`` here (in-process executors), or check nobody else holds it (the worker claims)."""
    if not remote:
        return store.try_claim(task.kind, task.key)
    info = store.claim_info(task.kind, task.key)
    return info is None or not info.alive


def _outcome(task: Task, future: Future, seconds: float, progress: Progress, log_dir: Path, debug: bool) -> tuple[Outcome, str]:
    """The outcome of a finished future, and where the task ran; a failure writes its traceback log."""
    error = future.exception()
    where, trace = "", ""
    if error is None:
        value = future.result()
        if not isinstance(value, WorkerResult):
            return Outcome(task, "ran", seconds), ""
        seconds = value.seconds or seconds  # the worker's own time: a queue (Slurm's, Ray's) is not the task's
        if not value.error:
            return Outcome(task, "ran" if value.ran else "reused", seconds), value.where
        if value.fatal:
            raise DatasetMissingError(value.error)
        message, trace, where = value.error, value.trace, value.where
    else:
        if isinstance(error, DatasetMissingError) or debug:
            raise error
        message = str(error) if isinstance(error, BenchError) else f"{type(error).__name__}: {error}"
        trace = "".join(traceback.format_exception(error))
    if debug:
        raise BenchError(f"{task.label}: {message}\n{trace}")
    log = failure_log(log_dir, task)
    ran_on = f"ran on: {where}\n" if where else ""
    atomic_write_text(log, f"{task.label} ({task.kind}/{task.key})\n{ran_on}\n{trace}")
    progress.log(f"  FAILED (not cached): {task.label}: {message}\n  traceback: {log}")
    return Outcome(task, "failed", seconds, message, log), where
