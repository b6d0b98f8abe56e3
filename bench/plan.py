"""Expand a suite into train jobs (one per distinct training config) and eval jobs.

Train jobs: defences x seeds (dataset, model, threat and train spec are per suite). The weight
averaging axis does not multiply training: one run records every averager the suite asks for.
Eval jobs: each train job x each weights choice (raw, or an averager) x each attack, using the
checkpoint the selection rule picks. Order is stable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench import keys
from bench.attacks import label as attack_label
from bench.config import EvalSpec, PluginRef, Suite, WASpec
from bench.params import non_defaults, to_plain
from bench.registry import ATTACKS
from bench.sanity import SANITY_VERSION
from bench.types import ThreatModel

ANALYSIS_VERSION = 1


@dataclass(frozen=True)
class TrainJob:
    key: str
    spec: dict
    defence: PluginRef
    seed: int
    display: str
    averagers: tuple[WASpec, ...] = ()
    zoo: bool = False  # a pre-trained reference model (``robustbench:<name>``): loaded, never trained

    def wa_key(self, wa: WASpec) -> str:
        """Key of the averaged weights of this run (stored under ``wa/<key>/``)."""
        return keys.digest({"protocol": keys.PROTOCOL_VERSION, "train_key": self.key, "wa": to_plain(wa)})


@dataclass(frozen=True)
class EvalJob:
    key: str
    spec: dict
    train: TrainJob
    wa: WASpec | None  # None = the raw weights
    checkpoint: str  # "last" or "best_val"
    attack: PluginRef
    column: str  # table column label, e.g. "PGD-20" ("PGD-20 @ ε=4/255" at an eval.eps radius)
    display: str  # leaderboard row, e.g. "fr+wa"
    threat: ThreatModel | None = None  # an eval.eps radius; None = the suite's threat (the leaderboard's)

    @property
    def weights(self) -> str:
        return f"{self.wa.kind if self.wa else 'raw'}:{self.checkpoint}"

    @property
    def attack_column(self) -> str:
        """The attack's leaderboard column, without the radius of an eval.eps job."""
        return self.column.split(" @ ε=")[0]


@dataclass(frozen=True)
class SanityJob:
    """Sanity checks (``bench/sanity.py``) of one set of weights."""

    key: str
    train: TrainJob
    wa: WASpec | None
    checkpoint: str


@dataclass(frozen=True)
class AnalysisJob:
    """Spectral analyses (``bench/analysis``) of one set of weights."""

    key: str
    train: TrainJob
    wa: WASpec | None
    checkpoint: str
    display: str


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

    def sanity_of(self, job: TrainJob, wa: WASpec | None) -> SanityJob | None:
        return next((s for s in self.sanity_jobs if s.train is job and s.wa == wa), None)

    def evals_of(self, job: TrainJob) -> list[EvalJob]:
        return [e for e in self.eval_jobs if e.train is job]


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


def expand(suite: Suite, limit: int | None = None) -> Plan:
    """Plan the grid. ``limit`` caps the number of test examples (it is part of the eval key)."""
    ev = suite.eval
    if limit is not None:
        n = limit if ev.n_examples is None else min(limit, ev.n_examples)
        ev = dataclasses.replace(ev, n_examples=n)
    none = ATTACKS.get("none")
    attacks = suite.attacks or [PluginRef("attack", "none", none.params(), none.version)]
    labels = [attack_label(a.name, a.params) for a in attacks]
    columns = [_display(a, attacks, lab) if labels.count(lab) > 1 else lab for a, lab in zip(attacks, labels)]
    if len(set(columns)) != len(columns):
        columns = [f"{c} #{i + 1}" for i, c in enumerate(columns)]
    checkpoint = suite.train.selection
    averagers = tuple(w for w in suite.wa if w is not None)
    train_jobs: list[TrainJob] = []
    eval_jobs: list[EvalJob] = []
    sanity_jobs: list[SanityJob] = []

    def add_weights(job: TrainJob, wa: WASpec | None, checkpoint: str, row: str) -> None:
        """The sanity job and one eval job per attack for one set of weights of ``job``."""
        weights = {"averaging": to_plain(wa), "checkpoint": checkpoint}
        sspec = {"sanity": SANITY_VERSION, "train_key": job.key, "weights": weights, "eval": to_plain(ev)}
        sanity_jobs.append(SanityJob(keys.digest(sspec), job, wa, checkpoint))
        for attack, column in zip(attacks, columns):
            espec = keys.eval_spec(job.key, weights, attack, suite.threat, ev)
            eval_jobs.append(EvalJob(keys.digest(espec), espec, job, wa, checkpoint, attack, column, row))
        for threat in suite.eval_eps:  # the same weights at other radii: keyed by their threat, kept off the leaderboard
            for attack, column in zip(attacks, columns):
                espec = keys.eval_spec(job.key, weights, attack, threat, ev)
                eval_jobs.append(EvalJob(keys.digest(espec), espec, job, wa, checkpoint, attack, f"{column} @ ε={threat.eps_text}", row, threat))

    for defence in suite.defences:
        display = _display(defence, suite.defences, defence.name)
        for seed in suite.seeds:
            spec = keys.train_spec(suite.dataset, suite.model, suite.threat, suite.train, defence, seed)
            job = TrainJob(keys.digest(spec), spec, defence, seed, display, averagers)
            train_jobs.append(job)
            for wa in suite.wa:
                add_weights(job, wa, checkpoint, display + wa_suffix(wa, suite.wa))
    for entry in suite.zoo:
        spec = {"protocol": keys.PROTOCOL_VERSION, "zoo": entry, "dataset": suite.dataset.name, "threat": keys.threat_plain(suite.threat)}
        job = TrainJob(keys.digest(spec), spec, PluginRef("zoo", entry, None, 1), 0, entry, zoo=True)
        train_jobs.append(job)
        add_weights(job, None, "zoo", entry)
    analysis_jobs = _analysis_jobs(suite, ev, eval_jobs, attacks)
    return Plan(suite, ev, train_jobs, eval_jobs, columns, attacks, sanity_jobs, analysis_jobs)


def _analysis_jobs(suite: Suite, ev: EvalSpec, eval_jobs: list[EvalJob], attacks: list[PluginRef]) -> list[AnalysisJob]:
    """One analysis per analysed leaderboard row and seed (the rows named in ``analysis.rows``)."""
    if suite.analysis is None:
        return []
    jobs: dict[tuple[str, int], AnalysisJob] = {}
    for e in eval_jobs:
        if suite.analysis.rows and e.display not in suite.analysis.rows:
            continue
        weights = {"averaging": to_plain(e.wa), "checkpoint": e.checkpoint}
        spec = {
            "analysis": ANALYSIS_VERSION,
            "train_key": e.train.key,
            "weights": weights,
            "params": to_plain(suite.analysis),
            "attacks": [a.plain() for a in attacks],  # perturbation spectra per gradient attack
            "threat": keys.threat_plain(suite.threat),
            "eval": {"n_examples": ev.n_examples, "subset_seed": ev.subset_seed},
        }
        jobs.setdefault((e.display, e.train.seed), AnalysisJob(keys.digest(spec), e.train, e.wa, e.checkpoint, e.display))
    return list(jobs.values())
