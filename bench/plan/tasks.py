"""The tasks of a plan and the plan itself. Each task is frozen, names its dependencies by key and writes one entry.

* ``TrainJob``: one per (defence, seed); trains once and records the raw weights and every weight
  average the suite asks for (the WA axis does not multiply training), with the ``last`` and
  ``best_val`` checkpoints, into one ``train/<key>`` entry. The averagers are part of its key (an
  entry is immutable), so a suite asking for another averager trains a run of its own; evaluations
  are keyed by the weights' ``base_key`` (the config without the averagers), since the raw weights
  and each average are bit-identical whatever else the run recorded (``tests/test_resume.py``):
  adding an averager re-uses every existing evaluation.
* ``EvalJob``: one per (weights, attack); ``SanityJob`` and ``AnalysisJob``: one per set of weights.
  They depend on the ``TrainJob`` that made the weights, named by key in ``WeightsRef``. An attack
  with ``shards: N`` adds N ``ShardJob`` per evaluation; the ``EvalJob`` then needs them and merges
  their per-sample flags by sample id (``bench/plan/shards.py``).
* ``PrefixJob``: the epochs several trainings share (FR and SAR before their ``start_epoch`` are
  PGD-AT, ``bench.types.SharedStart``), trained once and saved as a ``prefix`` entry; each of those
  ``TrainJob`` names it as its ``start`` and continues from it. Their keys do not change (the
  result is bit-identical), and the prefix is only run while one of them is missing.
* Reference rows (``zoo:``) and your own weights (``checkpoints:``, ``bench.evaluate``) have a
  ``TrainJob`` with ``zoo=True``: a row source, never run. A checkpoint row is keyed by the content
  of its weights (``bench/evaluation/checkpoints.py``), not by its file name or row name.

A task is self-contained: with its ``SuiteRef`` (the suite file and its digest) a fresh process
re-plans the suite and finds the same task by key (``bench.engine.worker.run_ref``); nothing links tasks by
object identity. ``bench/plan/expand.py`` makes them from a suite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench.core.params import to_plain
from bench.plan import keys, kinds
from bench.suite.specs import CheckpointSpec, CorruptionRef, EvalSpec, ExternalRef, PaperSpec, PluginRef, Suite, WASpec
from bench.types import ThreatModel


@dataclass(frozen=True)
class SuiteRef:
    """Where a task's suite comes from: the file, the digest of its resolved content, the --limit and --set."""

    path: str
    digest: str
    limit: int | None = None
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE: a worker re-plans the suite with them


@dataclass(frozen=True)
class WeightsRef:
    """One set of weights: a run's raw or averaged model at a checkpoint, a reference (zoo) model or your own."""

    train_key: str  # the train entry holding the weights
    wa: WASpec | None  # None = the raw weights
    checkpoint: str  # "last", "best_val", "zoo" or "checkpoint"
    zoo: str | None = None  # "robustbench:<name>"
    base_key: str = ""  # the training config without the run's other averagers: what keys evaluations
    source: CheckpointSpec | None = None  # a ``checkpoints:`` row (or bench.evaluate's model)

    @property
    def external(self) -> bool:
        """Weights that are loaded, never trained here (no train entry to wait for)."""
        return bool(self.zoo) or self.source is not None

    @property
    def tag(self) -> str:
        """The weights' folder in the train entry: ``raw`` or ``<kind>-<digest>`` of the averager."""
        return "raw" if self.wa is None else wa_tag(self.wa)

    @property
    def file(self) -> str:
        return kinds.weights_file(self.tag, self.checkpoint)

    def plain(self) -> dict[str, Any]:
        return {"averaging": to_plain(self.wa), "checkpoint": self.checkpoint}

    @property
    def eval_key(self) -> str:
        """What evaluations of these weights are keyed by: the weights do not depend on which other
        averagers their run recorded (tested), so adding an averager re-uses every evaluation."""
        return self.base_key or self.train_key


def wa_tag(wa: WASpec) -> str:
    return f"{wa.kind}-{keys.digest(to_plain(wa))[:8]}"


@dataclass(frozen=True)
class Task:
    kind: ClassVar[str]
    feeds_only: ClassVar[bool] = False  # its entry is only read by the tasks that need it: not run once they exist
    key: str
    suite: SuiteRef

    @property
    def deps(self) -> tuple[str, ...]:
        """Keys of the train entries this task reads."""
        return ()

    @property
    def needs(self) -> tuple[tuple[str, str], ...]:
        """(kind, key) of every entry this task reads: the scheduler runs it once they all exist."""
        return tuple((kinds.TRAIN.name, d) for d in self.deps)

    @property
    def label(self) -> str:
        raise NotImplementedError


def readers(tasks: list[Task]) -> dict[str, list[Task]]:
    """Key -> the tasks of ``tasks`` that need that entry."""
    out: dict[str, list[Task]] = {}
    for t in tasks:
        for _, k in t.needs:
            out.setdefault(k, []).append(t)
    return out


def unneeded(task: Task, needed_by: dict[str, list[Task]], has: Callable[[str, str], bool]) -> bool:
    """A ``feeds_only`` task whose readers (``needed_by``, from :func:`readers`) all have their entries."""
    return task.feeds_only and all(has(r.kind, r.key) for r in needed_by.get(task.key, ()))


@dataclass(frozen=True)
class TrainJob(Task):
    kind: ClassVar[str] = kinds.TRAIN.name
    spec: dict
    defence: PluginRef
    seed: int
    display: str
    averagers: tuple[WASpec, ...] = ()
    zoo: bool = False  # pre-trained weights (``robustbench:<name>`` or a checkpoints row): loaded, never trained
    model: str | None = None  # the row's model when it is not the suite's (checkpoints rows)
    start: str = ""  # the key of the PrefixJob it continues from (not keyed: the result is the same)
    start_epochs: int = 0  # the epochs that start covers

    @property
    def epochs(self) -> int:
        """The epochs this task trains (those of its shared start excluded)."""
        return self.spec["train"]["epochs"] - self.start_epochs if not self.zoo else 0

    @property
    def needs(self) -> tuple[tuple[str, str], ...]:
        return ((kinds.PREFIX.name, self.start),) if self.start else ()

    @property
    def label(self) -> str:
        return f"train {self.display} seed={self.seed}"


@dataclass(frozen=True)
class PrefixJob(Task):
    """The first ``epochs`` epochs that several trainings share (``bench.types.SharedStart``): the
    training of ``defence`` (its spec is ``spec["of"]``) stopped after them, its whole state saved
    in a ``prefix/<key>`` entry; each TrainJob whose ``start`` is this key resumes from it. Run only
    while some training that starts from it is still missing."""

    kind: ClassVar[str] = kinds.PREFIX.name
    feeds_only: ClassVar[bool] = True
    spec: dict
    defence: PluginRef
    seed: int
    display: str
    averagers: tuple[WASpec, ...]
    epochs: int
    shared_by: tuple[str, ...]  # the trainings' display names

    @property
    def label(self) -> str:
        return f"train {self.display} seed={self.seed} epochs 1-{self.epochs} (shared by {', '.join(self.shared_by)})"

    def as_train(self) -> TrainJob:
        """The training it is the start of, as the training loop runs it (stopped after ``epochs``)."""
        return TrainJob(self.key, self.suite, self.spec["of"], self.defence, self.seed, self.display, self.averagers)


@dataclass(frozen=True)
class _WeightsTask(Task):
    weights: WeightsRef
    display: str  # leaderboard row, e.g. "fr+wa"
    seed: int

    @property
    def deps(self) -> tuple[str, ...]:
        return () if self.weights.external else (self.weights.train_key,)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.display} seed={self.seed}"

    @property
    def train_key(self) -> str:
        return self.weights.train_key

    @property
    def wa(self) -> WASpec | None:
        return self.weights.wa

    @property
    def checkpoint(self) -> str:
        return self.weights.checkpoint

    @property
    def weights_label(self) -> str:
        """``raw:best_val``, ``swa:last``, ``zoo:zoo``."""
        return f"{self.wa.kind if self.wa else 'raw'}:{self.checkpoint}"


@dataclass(frozen=True)
class _AttackTask(_WeightsTask):
    """One attack on one set of weights: an evaluation, or a shard of one."""

    spec: dict
    attack: PluginRef | CorruptionRef | ExternalRef  # an attack, or a corruption or external column (``kind`` says)
    column: str  # table column label, e.g. "PGD-20" ("PGD-20 @ ε=4/255" at an eval.eps radius)

    @property
    def group(self) -> str:
        """``attack``, ``external`` or ``corruption``: what the column is (the last is not in the worst case)."""
        return self.attack.kind

    @property
    def label(self) -> str:
        return f"eval {self.display} seed={self.seed} {self.column}"


@dataclass(frozen=True)
class EvalJob(_AttackTask):
    kind: ClassVar[str] = kinds.EVAL.name
    shards: tuple[str, ...] = ()  # keys of its shard tasks (``shards: N`` on the attack): merged, not computed
    threat: ThreatModel | None = None  # an eval.eps radius; None = the suite's threat (the leaderboard's)
    after: tuple[str, ...] = ()  # eval.cascade: keys of the evaluations to its left (it attacks what they left robust)

    @property
    def needs(self) -> tuple[tuple[str, str], ...]:
        return (*super().needs, *((kinds.SHARD.name, k) for k in self.shards), *((kinds.EVAL.name, k) for k in self.after))

    @property
    def attack_column(self) -> str:
        """The attack's leaderboard column, without the radius of an eval.eps job."""
        return self.column.split(" @ ε=")[0]


@dataclass(frozen=True)
class ShardJob(_AttackTask):
    """Shard ``index`` of ``count`` of an evaluation: the per-sample flags of a contiguous run of batches."""

    kind: ClassVar[str] = kinds.SHARD.name
    index: int
    count: int
    threat: ThreatModel | None = None  # as its EvalJob's

    @property
    def label(self) -> str:
        return f"{super().label} shard {self.index + 1}/{self.count}"


@dataclass(frozen=True)
class SanityJob(_WeightsTask):
    """Sanity checks (``bench/evaluation/sanity.py``) of one set of weights."""

    kind: ClassVar[str] = kinds.SANITY.name


@dataclass(frozen=True)
class AnalysisJob(_WeightsTask):
    """Spectral analyses (``bench/analysis``) of one set of weights."""

    kind: ClassVar[str] = kinds.ANALYSIS.name


@dataclass
class Plan:
    suite: Suite
    eval_spec: EvalSpec
    train_jobs: list[TrainJob]
    eval_jobs: list[EvalJob]
    columns: list[str]
    attacks: list[PluginRef]
    sanity_jobs: list[SanityJob] = dataclasses.field(default_factory=list)
    analysis_jobs: list[AnalysisJob] = dataclasses.field(default_factory=list)
    shard_jobs: list[ShardJob] = dataclasses.field(default_factory=list)
    paper: PaperSpec | None = None  # the suite's ``paper:`` table, its rows and columns checked against the plan
    prefix_jobs: list[PrefixJob] = dataclasses.field(default_factory=list)
    external_columns: list[str] = dataclasses.field(default_factory=list)  # ``- external:`` columns (in the worst case)
    corruption_columns: list[tuple[CorruptionRef, str]] = dataclasses.field(default_factory=list)  # (ref, label): their own group
    waiting: list[tuple[str, str, int, Path]] = dataclasses.field(default_factory=list)  # per-row external files not there yet

    def incomplete(self, display: str, seed: int) -> bool:
        """Whether a row's worst case waits for an external file (``waiting``): it is then not computed."""
        return any(row == display and s == seed for _, row, s, _ in self.waiting)

    @property
    def worst_columns(self) -> list[str]:
        """The columns the worst case is over: the attacks and the external adversarial examples."""
        return [*self.columns, *self.external_columns]

    @property
    def tasks(self) -> list[Task]:
        """Every runnable task, dependencies first (zoo rows are not tasks)."""
        trains = [t for t in self.train_jobs if not t.zoo]
        return [*self.prefix_jobs, *trains, *self.analysis_jobs, *self.sanity_jobs, *self.shard_jobs, *self.eval_jobs]

    def task(self, key: str) -> Task | None:
        return next((t for t in self.tasks if t.key == key), None)

    def sanity_of(self, job: TrainJob, wa: WASpec | None) -> SanityJob | None:
        return next((s for s in self.sanity_jobs if s.train_key == job.key and s.wa == wa), None)

    def evals_of(self, job: TrainJob) -> list[EvalJob]:
        return [e for e in self.eval_jobs if e.train_key == job.key]

