"""Live progress: tqdm bars on an interactive terminal, plain status lines otherwise.

For a whole plan (``start_plan``/``started``/``finished``), one line per finished task with done /
total over every task kind, the elapsed time and an ETA: the seconds left by the run's estimator
(``bench/plan/estimate.py``, the same one that orders the scheduler's tasks; this module only shows
it), or ``?`` with none. Training reports its epochs here (``epoch_done``), which passes them on to
the estimator.

It is divided by the number of tasks seen running at once. Outside a terminal (CI, Slurm logs) a
line is printed at least every ``heartbeat_s`` seconds (30) while anything runs: the current loop
(``train ... epoch 2/10: batch 120/352``) and the plan's counts, so a log never goes silent.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
HEARTBEAT_S = 30.0


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = round(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Reports progress to stderr. ``enabled=False`` silences everything (library use, tests).

    ``estimator``: the run's ``bench.plan.estimate.Estimator`` (the ETA; None: no ETA until the
    scheduler attaches one). ``heartbeat_s``: outside a terminal, the longest silence
    while something runs. ``slots``: tasks that run at once, where known (else the most seen running).
    """

    def __init__(
        self,
        enabled: bool = True,
        estimator: Any = None,
        heartbeat_s: float = HEARTBEAT_S,
        slots: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.estimator = estimator
        self.heartbeat_s = heartbeat_s
        self.tasks: dict[str, Any] = {}  # key -> task of the plan
        self.done: set[str] = set()
        self.running: dict[str, float] = {}  # key -> start time
        self.parallel = 1
        self.slots = slots  # how many tasks can run at once (local workers), when known
        self.start = time.perf_counter()
        self.current = ""  # the loop now running in this process, for the heartbeat
        self.last_line = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ output

    def log(self, message: str) -> None:
        if self.enabled:
            with self._lock:
                tqdm.write(message, file=sys.stderr)
                self.last_line = time.perf_counter()

    def bar(self, items: Iterable[T], total: int, desc: str) -> Iterator[T]:
        """Iterate with a bar on a terminal; elsewhere the heartbeat names this loop and its batch,
        and one line is printed when a long loop finishes."""
        if self.tty:
            yield from tqdm(items, total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
            return
        start = time.perf_counter()
        self._ensure_heartbeat()
        try:
            for i, item in enumerate(items):
                self.current = f"{desc}: batch {i + 1}/{total}, {duration(time.perf_counter() - start)}"
                yield item
        finally:
            self.current = ""
        if self.enabled and time.perf_counter() - start > self.heartbeat_s:
            self.log(f"  {desc}: {total} batches in {time.perf_counter() - start:.0f}s")

    # ------------------------------------------------------------------------------- whole plan

    def start_plan(self, tasks: Iterable[Any]) -> None:
        """The tasks this run will go through (every kind): what done / total and the ETA count."""
        self.tasks = {t.key: t for t in tasks}
        self.start = time.perf_counter()
        self._ensure_heartbeat()

    def started(self, task: Any) -> None:
        self.running[task.key] = time.perf_counter()
        self.parallel = max(self.parallel, min(len(self.running), self.slots or len(self.running)))

    def epoch_done(self, task: Any, epoch: int, epochs: int, seconds: float) -> None:
        """Epoch ``epoch`` (counted from 1) of a run that stops after ``epochs`` finished (passed on to the estimator)."""
        if self.estimator is not None:
            self.estimator.epoch_done(task, epoch, epochs, seconds)

    def finished(self, task: Any, status: str, seconds: float = 0.0, where: str = "") -> None:
        """``task`` ended (ran, reused, cached, failed, skipped); prints its line unless it was free.
        (Its time is the estimator's to record: the scheduler gives it before this line is printed.)"""
        self.running.pop(task.key, None)
        self.done.add(task.key)
        if status in ("cached", "skipped"):
            return
        at = f" on {where}" if where else ""
        self.log(f"{self.counts()} {status} {task.label} ({seconds:.1f}s{at}) · {self.timing()}")

    def counts(self) -> str:
        total, done = len(self.tasks), len(self.done)
        return f"[done {done}/{total}, running {len(self.running)}, left {max(total - done - len(self.running), 0)}]"

    def timing(self) -> str:
        eta, unknown = self.eta()
        if unknown and eta < 1:
            shown = "?"
        elif unknown:
            shown = f">{duration(eta)} ({', '.join(unknown)} not timed yet)"
        else:
            shown = duration(eta)
        return f"elapsed {duration(time.perf_counter() - self.start)}, ETA {shown}"

    def eta(self) -> tuple[float, list[str]]:
        """Seconds until every task of the plan is done, over the tasks with an estimate, and the
        kinds of the tasks left without one (the ETA is then a lower bound): the estimator's work left
        divided by the number of tasks seen running at once."""
        if self.estimator is None:
            left = [t.kind for k, t in self.tasks.items() if k not in self.done]
            return 0.0, list(dict.fromkeys(left))
        left, unknown = self.estimator.remaining(self.tasks.values(), self.done, self.running, time.perf_counter())
        return left / max(self.parallel, 1), unknown

    # -------------------------------------------------------------------------------- heartbeat

    def _ensure_heartbeat(self) -> None:
        if not self.enabled or self.tty or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._beat, name="bench-progress", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        step = min(self.heartbeat_s, 1.0)
        while not self._stop.wait(step):
            if time.perf_counter() - self.last_line < self.heartbeat_s or not (self.running or self.current):
                continue
            what = self.current or self._running_text()
            plan = f" · {self.counts()} {self.timing()}" if self.tasks else ""
            self.log(f"  ... {what}{plan}")

    def _running_text(self) -> str:
        keys = list(self.running)
        labels = ", ".join(self.tasks[k].label if k in self.tasks else k[:12] for k in keys[:3])
        return f"running {labels}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    def close(self) -> None:
        """Stop the heartbeat (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
