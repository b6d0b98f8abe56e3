"""Suite -> a graph of tasks. Each task is frozen, names its dependencies by key and writes one entry.

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
object identity. The planner also cross-checks what needs the plan (analysis rows, paper rows).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from bench.attacks import label as attack_label
from bench.core.errors import ConfigError, show
from bench.core.params import non_defaults, to_plain
from bench.evaluation.sanity import SANITY_VERSION
from bench.plan import keys
from bench.registry import ATTACKS, DEFENCES
from bench.suite.config import CheckpointSpec, EvalSpec, PluginRef, Suite, WASpec
from bench.types import SharedStart, ThreatModel, first_milestone

ANALYSIS_VERSION = 1
PREFIX_VERSION = 1


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
        return f"weights/{self.tag}/{self.checkpoint}.pt"

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
        return tuple(("train", d) for d in self.deps)

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
    kind: ClassVar[str] = "train"
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
        return (("prefix", self.start),) if self.start else ()

    @property
    def label(self) -> str:
        return f"train {self.display} seed={self.seed}"


@dataclass(frozen=True)
class PrefixJob(Task):
    """The first ``epochs`` epochs that several trainings share (``bench.types.SharedStart``): the
    training of ``defence`` (its spec is ``spec["of"]``) stopped after them, its whole state saved
    in a ``prefix/<key>`` entry; each TrainJob whose ``start`` is this key resumes from it. Run only
    while some training that starts from it is still missing."""

    kind: ClassVar[str] = "prefix"
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
class EvalJob(_WeightsTask):
    kind: ClassVar[str] = "eval"
    spec: dict
    attack: PluginRef
    column: str  # table column label, e.g. "PGD-20" ("PGD-20 @ ε=4/255" at an eval.eps radius)
    shards: tuple[str, ...] = ()  # keys of its shard tasks (``shards: N`` on the attack): merged, not computed
    threat: ThreatModel | None = None  # an eval.eps radius; None = the suite's threat (the leaderboard's)
    after: tuple[str, ...] = ()  # eval.cascade: keys of the evaluations to its left (it attacks what they left robust)

    @property
    def needs(self) -> tuple[tuple[str, str], ...]:
        return (*super().needs, *(("shard", k) for k in self.shards), *(("eval", k) for k in self.after))

    @property
    def attack_column(self) -> str:
        """The attack's leaderboard column, without the radius of an eval.eps job."""
        return self.column.split(" @ ε=")[0]

    @property
    def label(self) -> str:
        return f"eval {self.display} seed={self.seed} {self.column}"


@dataclass(frozen=True)
class ShardJob(_WeightsTask):
    """Shard ``index`` of ``count`` of an evaluation: the per-sample flags of a contiguous run of batches."""

    kind: ClassVar[str] = "shard"
    spec: dict
    attack: PluginRef
    column: str
    index: int
    count: int
    threat: ThreatModel | None = None  # as its EvalJob's

    @property
    def label(self) -> str:
        return f"eval {self.display} seed={self.seed} {self.column} shard {self.index + 1}/{self.count}"


@dataclass(frozen=True)
class SanityJob(_WeightsTask):
    """Sanity checks (``bench/evaluation/sanity.py``) of one set of weights."""

    kind: ClassVar[str] = "sanity"


@dataclass(frozen=True)
class AnalysisJob(_WeightsTask):
    """Spectral analyses (``bench/analysis``) of one set of weights."""

    kind: ClassVar[str] = "analysis"


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
    paper: Any = None  # bench.report.papers.PaperSpec when the suite has a ``paper:`` section
    prefix_jobs: list[PrefixJob] = dataclasses.field(default_factory=list)

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


def _display(ref: PluginRef, refs: list[PluginRef], base: str) -> str:
    """The plain name, or name(k=v, ...) when the same plug-in appears more than once."""
    if sum(r.name == ref.name for r in refs) < 2:
        return base
    changed = non_defaults(ref.params)
    return f"{base}({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else base


def wa_suffix(wa: WASpec | None, all_wa: list[WASpec | None]) -> str:
    """``""`` for raw weights; ``+wa`` when the suite has one averager, else ``+swa``, ``+ema(...)``."""
    if wa is None:
        return ""
    specs = [w for w in all_wa if w is not None]
    if len(specs) == 1:
        return "+wa"
    same_kind = [w for w in specs if w.kind == wa.kind]
    if len(same_kind) == 1:
        return f"+{wa.kind}"
    changed = non_defaults(wa)
    changed.pop("kind", None)
    return f"+{wa.kind}({', '.join(f'{k}={v}' for k, v in changed.items())})"


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError("--limit", f"must be a positive number of test examples, got {limit!r}")


def expand(suite: Suite, limit: int | None = None) -> Plan:
    """Plan the grid. ``limit`` caps the number of test examples (it is part of the eval key)."""
    check_limit(limit)
    try:
        return _expand(suite, limit)
    except ConfigError as e:
        raise e.naming(suite.overrides) from None


def _expand(suite: Suite, limit: int | None) -> Plan:
    ev = suite.eval
    if limit is not None:
        n = limit if ev.n_examples is None else min(limit, ev.n_examples)
        ev = dataclasses.replace(ev, n_examples=n)
    ref = SuiteRef(str(suite.path.resolve()), suite.digest, limit, suite.overrides)
    if ev.cascade and any(a.shards > 1 for a in suite.attacks):
        raise ConfigError(f"{suite.sources.get('eval', suite.path)}: eval.cascade", "cannot be combined with sharded attacks (shards: N)")
    none = ATTACKS.get("none")
    attacks = suite.attacks or [PluginRef("attack", "none", none.params(), none.version)]
    labels = [attack_label(a.name, a.params, suite.threat.norm) for a in attacks]
    columns = [_display(a, attacks, lab) if labels.count(lab) > 1 else lab for a, lab in zip(attacks, labels)]
    if len(set(columns)) != len(columns):
        columns = [f"{c} #{i + 1}" for i, c in enumerate(columns)]
    averagers = tuple(w for w in suite.wa if w is not None)
    train_jobs: list[TrainJob] = []
    eval_jobs: list[EvalJob] = []
    sanity_jobs: list[SanityJob] = []
    shard_jobs: list[ShardJob] = []

    def add_weights(weights: WeightsRef, row: str, seed: int) -> None:
        """The sanity job and one eval job per attack for one set of weights."""
        plain = weights.plain()
        sspec = {"sanity": SANITY_VERSION, "train_key": weights.eval_key, "weights": plain, "eval": keys.options_plain(ev, drop=("cascade",))}
        sanity_jobs.append(SanityJob(keys.digest(sspec), ref, weights, row, seed))
        # the suite's radius (the leaderboard), then each eval.eps radius (curves only; keyed by its threat)
        for threat in (None, *suite.eval_eps):
            left: list[str] = []  # eval.cascade: the evaluations to the left at this radius
            for attack, column in zip(attacks, columns):
                label = column if threat is None else f"{column} @ ε={threat.eps_text}"
                espec = keys.eval_spec(weights.eval_key, plain, attack, threat or suite.threat, ev)
                if left:  # eval.cascade: keyed by the evaluations it runs after (the first one is the plain one)
                    espec["after"] = list(left)
                shards = [
                    ShardJob(keys.digest({**espec, "shard": i}), ref, weights, row, seed, {**espec, "shard": i}, attack, label, i, attack.shards, threat)
                    for i in range(attack.shards if attack.shards > 1 else 0)
                ]  # fmt: skip
                shard_jobs.extend(shards)
                eval_jobs.append(EvalJob(keys.digest(espec), ref, weights, row, seed, espec, attack, label, tuple(s.key for s in shards), threat, tuple(left)))
                if ev.cascade:
                    left.append(eval_jobs[-1].key)

    prefixes = _prefixes(suite, ref, averagers)
    for defence in suite.defences:
        display = _display(defence, suite.defences, defence.name)
        for seed in suite.seeds:
            spec = _train_spec(suite, defence, seed, averagers)
            base = {k: v for k, v in spec.items() if k != "averagers"}
            start = prefixes.get(keys.digest(spec))
            job = TrainJob(keys.digest(spec), ref, spec, defence, seed, display, averagers, **_start_fields(start))
            train_jobs.append(job)
            for wa in suite.wa:
                weights = WeightsRef(job.key, wa, suite.train.selection, base_key=keys.digest(base))
                add_weights(weights, display + wa_suffix(wa, suite.wa), seed)
    for entry in suite.zoo:
        spec = {"protocol": keys.PROTOCOL_VERSION, "zoo": entry, "dataset": suite.dataset.name, "threat": keys.threat_plain(suite.threat)}
        job = TrainJob(keys.digest(spec), ref, spec, PluginRef("zoo", entry, None, 1), 0, entry, zoo=True)
        train_jobs.append(job)
        add_weights(WeightsRef(job.key, None, "zoo", zoo=entry), entry, 0)
    for row in suite.checkpoints:  # keyed by content and dataset: bench.evaluate of the same model shares the entries
        spec = {"protocol": keys.PROTOCOL_VERSION, "weights": row.digest, "dataset": suite.dataset.plain()}
        job = TrainJob(keys.digest(spec), ref, spec, PluginRef("checkpoint", row.name, None, 1), 0, row.name, zoo=True, model=row.model.name)
        train_jobs.append(job)
        add_weights(WeightsRef(job.key, None, "checkpoint", source=row), row.name, 0)
    plan = Plan(suite, ev, train_jobs, eval_jobs, columns, attacks, sanity_jobs, shard_jobs=shard_jobs)
    plan.prefix_jobs = list({p.key: p for p in prefixes.values()}.values())
    plan.analysis_jobs = _analysis_jobs(plan, ref)
    if suite.paper_raw is not None:
        from bench.report.papers import parse_paper

        rows = list(dict.fromkeys(e.display for e in eval_jobs))
        analysed = list(dict.fromkeys(a.display for a in plan.analysis_jobs))
        plan.paper = parse_paper(suite.paper_raw, f"{suite.sources.get('paper', suite.path)}: paper", rows, columns, analysed)
    return plan


def _prefixes(suite: Suite, ref: SuiteRef, averagers: tuple[WASpec, ...]) -> dict[str, PrefixJob]:
    """Train key -> the PrefixJob that training starts from, for the suite's trainings that share a start.

    A defence declaring ``shared_start`` (FR and SAR before their ``start_epoch``) starts from the
    training of the defence it names stopped after those epochs, and so does that defence's own
    training when the suite has it (from the longest such start). The trainings' keys do not change:
    the result is bit-identical either way (``tests/test_resume.py``).
    """
    train = suite.train
    own: dict[str, PrefixJob] = {}  # the defences declaring a shared start
    base: dict[str, PrefixJob] = {}  # the defences they start from
    users: dict[str, list[str]] = {}
    for defence in suite.defences:
        start = shared_start(defence, train)
        if start is None or not 0 < start.epochs < train.epochs:
            continue
        ref_b = PluginRef("defence", start.name, start.params, DEFENCES.get(start.name).version)
        for seed in suite.seeds:
            of = _train_spec(suite, ref_b, seed, averagers)
            spec = {"prefix": PREFIX_VERSION, "of": of, "epochs": start.epochs}
            job = PrefixJob(keys.digest(spec), ref, spec, ref_b, seed, start.name, averagers, start.epochs, ())
            own[keys.digest(_train_spec(suite, defence, seed, averagers))] = job
            held = base.get(keys.digest(of))
            if held is None or held.epochs < job.epochs:
                base[keys.digest(of)] = job
            users.setdefault(job.key, []).append(_display(defence, suite.defences, defence.name))
    found = {**base, **own}
    for defence in suite.defences:  # the base defences' rows, when the suite trains them
        for seed in suite.seeds:
            key = keys.digest(_train_spec(suite, defence, seed, averagers))
            if key in base and key not in own:
                users[found[key].key].append(_display(defence, suite.defences, defence.name))
    return {k: dataclasses.replace(j, shared_by=tuple(dict.fromkeys(users[j.key]))) for k, j in found.items()}


def shared_start(defence: PluginRef, train: Any) -> SharedStart | None:
    """What ``defence`` declares it shares with another defence's training under the ``train`` spec, if anything."""
    share = DEFENCES.get(defence.name).shared_start
    return share(defence.params, first_milestone(train.schedule.milestones, train.epochs)) if share else None


def _start_fields(start: PrefixJob | None) -> dict[str, Any]:
    return {"start": start.key, "start_epochs": start.epochs} if start else {}


def _train_spec(suite: Suite, defence: PluginRef, seed: int, averagers: tuple[WASpec, ...]) -> dict[str, Any]:
    """What keys a training: the suite's protocol, the defence, the seed and the run's averagers."""
    base = keys.train_spec(suite.dataset, suite.model, suite.threat, suite.train, defence, seed)
    return {**base, "averagers": [to_plain(w) for w in averagers]}


def _analysis_jobs(plan: Plan, ref: SuiteRef) -> list[AnalysisJob]:
    """One analysis per analysed leaderboard row and seed (the rows named in ``analysis.rows``)."""
    suite, ev = plan.suite, plan.eval_spec
    if suite.analysis is None:
        return []
    known = list(dict.fromkeys(e.display for e in plan.eval_jobs))
    for i, row in enumerate(suite.analysis.rows):
        if row not in known:
            close = difflib.get_close_matches(row, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = f"{suite.sources.get('analysis', suite.path)}: analysis.rows[{i}]"
            raise ConfigError(where, f"no leaderboard row {show(row)}{hint}; rows: {', '.join(known)}")
    jobs: dict[tuple[str, int], AnalysisJob] = {}
    for e in plan.eval_jobs:
        if suite.analysis.rows and e.display not in suite.analysis.rows:
            continue
        spec = {
            "analysis": ANALYSIS_VERSION,
            "train_key": e.weights.eval_key,
            "weights": e.weights.plain(),
            "params": to_plain(suite.analysis),
            "attacks": [a.plain() for a in plan.attacks],  # perturbation spectra per gradient attack
            "threat": keys.threat_plain(suite.threat),
            # eval.precision bf16 runs the analysis's attacks in bf16 (its forward measurements stay fp32)
            "eval": {"n_examples": ev.n_examples, "subset_seed": ev.subset_seed, **({"precision": ev.precision} if ev.precision != "fp32" else {})},
        }
        jobs.setdefault((e.display, e.seed), AnalysisJob(keys.digest(spec), ref, e.weights, e.display, e.seed))
    return list(jobs.values())
