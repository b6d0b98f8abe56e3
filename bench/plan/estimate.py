"""The one estimate of how long tasks take: used by the scheduler's order and the progress display's ETA.

``Estimator.estimate(task)`` is, in this order:

1. measured: the mean time of finished tasks of the same group (a training defence, an attack with
   its parameters, or a kind), and for training also the seconds per epoch seen so far
   (``epoch_done``), so an estimate exists after the first epoch, not only after the first run;
2. before that, the prior (task key -> seconds, from the FLOP model ``bench/plan/cost.py``), scaled by
   how far the priors of that kind were off (finished tasks, and each training epoch); when the priors
   are a guess (``calibrated=False``: the device's speed was not measured), a kind not measured yet is
   scaled by how far the other kinds were off (their geometric mean): a guessed speed is wrong by
   about the same factor for all of them;
3. else the mean of the finished tasks of that kind; with none of these, None (unknown).

Which kind's measurements estimate a task is its kind's ``measured_as`` (``bench/plan/kinds.py``: a
shared start's epochs are training epochs). The scheduler feeds it finished tasks (``ran``), training
reports its epochs through the progress display (``epoch_done``), and ``remaining`` sums what is
left of a plan for the ETA ``bench/core/progress.py`` prints.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.plan.cost import estimates, measured
from bench.plan.kinds import TRAIN, measured_as


def group(task: Any) -> tuple:
    """Tasks expected to take about as long: a defence's training runs, an attack's evaluations."""
    if measured_as(task) == TRAIN.name:  # a prefix's epochs are its defence's
        return (TRAIN.name, getattr(task.defence, "name", ""), len(getattr(task, "averagers", ())))
    attack = getattr(task, "attack", None)
    if attack is not None:
        return (task.kind, attack.name, repr(attack.params), getattr(attack, "n_examples", None))
    return (task.kind,)


def epochs_of(task: Any) -> int | None:
    """The number of epochs a training task runs (None for other tasks)."""
    epochs = getattr(task, "epochs", None) if measured_as(task) == TRAIN.name else None
    return epochs if isinstance(epochs, int) else None


class Estimator:
    """Expected seconds per task: priors corrected by what was measured so far (see the module).

    ``priors``: task key -> seconds (``bench.plan.cost.estimates``); ``calibrated``: whether they come
    from a measurement of this device (else a guess, corrected across kinds).
    """

    def __init__(self, priors: Mapping[str, float] | None = None, calibrated: bool = True) -> None:
        self.priors = dict(priors or {})
        self.calibrated = calibrated
        self.seconds: dict[tuple, list[float]] = defaultdict(list)  # group -> measured seconds
        self.kind_seconds: dict[str, list[float]] = defaultdict(list)
        self.ratio: dict[str, list[float]] = defaultdict(list)  # measured_as kind -> measured / prior
        self.per_epoch: dict[tuple, list[float]] = defaultdict(list)  # train group -> seconds per epoch
        self.epochs_left: dict[str, int] = {}  # running trainings, from their last finished epoch

    @classmethod
    def for_plan(cls, plan: Any, device: Any, cache_dir: Path | None, priors: bool = True) -> Estimator:
        """The estimator of a run of ``plan`` on ``device``: the FLOP model's priors at the throughput
        ``bench profile`` measured there (or a guess); ``priors=False`` skips them (nothing left to run)."""
        return cls(estimates(plan, device, cache_dir) if priors else {}, calibrated=measured(device, cache_dir))

    # ----------------------------------------------------------------------------- measurements

    def epoch_done(self, task: Any, epoch: int, epochs: int, seconds: float) -> None:
        """Epoch ``epoch`` (counted from 1) of a run that stops after ``epochs`` took ``seconds``."""
        self.per_epoch[group(task)].append(seconds)
        self.epochs_left[task.key] = epochs - epoch
        prior, planned = self.priors.get(task.key), epochs_of(task)
        if prior and planned and seconds > 0:
            self.ratio[TRAIN.name].append(seconds / (prior / planned))

    def ran(self, task: Any, seconds: float) -> None:
        """``task`` was computed in ``seconds``."""
        if seconds <= 0:
            return
        self.seconds[group(task)].append(seconds)
        self.kind_seconds[task.kind].append(seconds)
        prior = self.priors.get(task.key)
        if prior:
            self.ratio[measured_as(task)].append(seconds / prior)

    # -------------------------------------------------------------------------------- estimates

    def estimate(self, task: Any) -> float | None:
        """Expected seconds of ``task`` from what was measured, else its prior (see the module); None if unknown."""
        g = group(task)
        epochs = epochs_of(task)
        if epochs and self.per_epoch.get(g):
            return self.epochs_left.get(task.key, epochs) * _mean(self.per_epoch[g])
        if self.seconds.get(g):
            return _mean(self.seconds[g])
        prior = self.priors.get(task.key)
        if prior is not None:
            return prior * self.correction(measured_as(task))
        if self.kind_seconds.get(task.kind):
            return _mean(self.kind_seconds[task.kind])
        return None

    def correction(self, of: str) -> float:
        """Measured / prior seconds for tasks measured as kind ``of`` (see the module: 2.)."""
        if self.ratio.get(of):
            return _mean(self.ratio[of])
        if self.calibrated or not self.ratio:
            return 1.0
        means = [_mean(r) for r in self.ratio.values() if r]
        return math.exp(_mean([math.log(m) for m in means]))

    def remaining(
        self, tasks: Iterable[Any], done: set[str], running: Mapping[str, float], now: float
    ) -> tuple[float, list[str]]:
        """Seconds of work left in ``tasks`` (one after another) over those with an estimate, and the
        kinds of the tasks left without one. ``running``: key -> start time (``now``'s clock); a running
        task counts what is left of its estimate (a training run, its epochs left)."""
        left, unknown = 0.0, []
        for task in tasks:
            if task.key in done:
                continue
            guess = self.estimate(task)
            if guess is None:
                unknown.append(task.kind)
                continue
            if task.key in running and task.key not in self.epochs_left:
                guess = max(guess - (now - running[task.key]), 0.0)
            left += guess
        return left, list(dict.fromkeys(unknown))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
