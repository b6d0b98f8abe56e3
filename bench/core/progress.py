"""Live progress: tqdm bars on an interactive terminal, plain status lines otherwise.

For a whole plan (``start_plan``/``started``/``finished``), one line per finished task with done /
total over every task kind, the elapsed time and an ETA. The ETA sums an estimate per task left:

1. measured: the mean time of finished tasks of the same group (a training defence, an attack with
   its parameters, or a kind), and for training also the seconds per epoch seen so far
   (``epoch_done``), so an estimate exists after the first epoch, not only after the first run;
2. before that, ``estimates`` (task key -> seconds, e.g. from a FLOP model), scaled by how far the
   estimates of that kind were off (finished tasks, and each training epoch); when the estimates are
   a guess (``calibrated=False``: the device's speed was not measured), a kind not measured yet is
   scaled by how far the other kinds were off (their geometric mean): a guessed speed is wrong by
   about the same factor for all of them;
3. else the mean of the finished tasks of that kind; with none of these the ETA is ``?``.

It is divided by the number of tasks seen running at once. Outside a terminal (CI, Slurm logs) a
line is printed at least every ``heartbeat_s`` seconds (30) while anything runs: the current loop
(``train ... epoch 2/10: batch 120/352``) and the plan's counts, so a log never goes silent.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import defaultdict
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


def estimate_kind(task: Any) -> str:
    """The kind whose measurements and FLOP/s estimate ``task``: a prefix's epochs are training epochs."""
    return "train" if task.kind == "prefix" else task.kind


def group(task: Any) -> tuple:
    """Tasks expected to take about as long: a defence's training runs, an attack's evaluations."""
    if estimate_kind(task) == "train":  # a prefix's epochs are its defence's
        return ("train", getattr(task.defence, "name", ""), len(getattr(task, "averagers", ())))
    attack = getattr(task, "attack", None)
    if attack is not None:
        return (task.kind, attack.name, repr(attack.params), getattr(attack, "n_examples", None))
    return (task.kind,)


class Progress:
    """Reports progress to stderr. ``enabled=False`` silences everything (library use, tests).

    ``estimates``: prior seconds per task key (``bench.plan.cost.estimates``), used until tasks of a
    kind have been measured; ``calibrated``: whether they come from a measurement of this device
    (else a guess, corrected across kinds). ``heartbeat_s``: outside a terminal, the longest silence
    while something runs. ``slots``: tasks that run at once, where known (else the most seen running).
    """

    def __init__(
        self,
        enabled: bool = True,
        estimates: dict[str, float] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        slots: int | None = None,
        calibrated: bool = True,
    ) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.estimates = dict(estimates or {})
        self.calibrated = calibrated
        self.heartbeat_s = heartbeat_s
        self.tasks: dict[str, Any] = {}  # key -> task of the plan
        self.done: set[str] = set()
        self.running: dict[str, float] = {}  # key -> start time
        self.seconds: dict[tuple, list[float]] = defaultdict(list)  # group -> measured seconds
        self.kind_seconds: dict[str, list[float]] = defaultdict(list)
        self.ratio: dict[str, list[float]] = defaultdict(list)  # kind -> measured / estimated
        self.per_epoch: dict[tuple, list[float]] = defaultdict(list)  # train group -> seconds per epoch
        self.epochs_left: dict[str, int] = {}  # running trainings, from their last finished epoch
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
        """Epoch ``epoch`` (counted from 1) of a run that stops after ``epochs`` finished: refines the training estimates."""
        self.per_epoch[group(task)].append(seconds)
        self.epochs_left[task.key] = epochs - epoch
        prior, planned = self.estimates.get(task.key), _epochs(task)
        if prior and planned and seconds > 0:
            self.ratio["train"].append(seconds / (prior / planned))

    def finished(self, task: Any, status: str, seconds: float = 0.0, where: str = "") -> None:
        """``task`` ended (ran, reused, cached, failed, skipped); prints its line unless it was free."""
        self.running.pop(task.key, None)
        self.done.add(task.key)
        if status == "ran" and seconds > 0:
            self.seconds[group(task)].append(seconds)
            self.kind_seconds[task.kind].append(seconds)
            prior = self.estimates.get(task.key)
            if prior:
                self.ratio[estimate_kind(task)].append(seconds / prior)
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

    def estimate(self, task: Any) -> float | None:
        """Expected seconds of ``task`` from what was measured, else the prior estimate (see the module)."""
        g = group(task)
        epochs = _epochs(task)
        if epochs and self.per_epoch.get(g):
            return self.epochs_left.get(task.key, epochs) * _mean(self.per_epoch[g])
        if self.seconds.get(g):
            return _mean(self.seconds[g])
        prior = self.estimates.get(task.key)
        if prior is not None:
            return prior * self._correction(estimate_kind(task))
        if self.kind_seconds.get(task.kind):
            return _mean(self.kind_seconds[task.kind])
        return None

    def _correction(self, of: str) -> float:
        """Measured / estimated seconds for tasks of kind ``of`` (see the module: 2.)."""
        if self.ratio.get(of):
            return _mean(self.ratio[of])
        if self.calibrated or not self.ratio:
            return 1.0
        means = [_mean(r) for r in self.ratio.values() if r]
        return math.exp(_mean([math.log(m) for m in means]))

    def eta(self) -> tuple[float, list[str]]:
        """Seconds until every task of the plan is done, over the tasks with an estimate, and the
        kinds of the tasks left without one (the ETA is then a lower bound)."""
        now, left, unknown = time.perf_counter(), 0.0, []
        for key, task in self.tasks.items():
            if key in self.done:
                continue
            guess = self.estimate(task)
            if guess is None:
                unknown.append(task.kind)
                continue
            if key in self.running and key not in self.epochs_left:  # (a training run's epochs are counted)
                guess = max(guess - (now - self.running[key]), 0.0)
            left += guess
        return left / max(self.parallel, 1), list(dict.fromkeys(unknown))

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


def _epochs(task: Any) -> int | None:
    """The number of epochs a training task runs (None for other tasks)."""
    epochs = getattr(task, "epochs", None) if estimate_kind(task) == "train" else None
    return epochs if isinstance(epochs, int) else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
