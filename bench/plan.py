"""Expand a suite into train jobs (one per distinct training config) and eval jobs.

Train jobs: defences x seeds (dataset, model, threat and train spec are per suite). Eval jobs:
each train job x the weights chosen by the selection rule x each attack. Order is stable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench import keys
from bench.attacks import label as attack_label
from bench.config import EvalSpec, PluginRef, Suite
from bench.params import non_defaults
from bench.registry import ATTACKS


@dataclass(frozen=True)
class TrainJob:
    key: str
    spec: dict
    defence: PluginRef
    seed: int
    display: str


@dataclass(frozen=True)
class EvalJob:
    key: str
    spec: dict
    train: TrainJob
    weights: str  # "raw:last" or "raw:best_val"
    attack: PluginRef
    column: str  # table column label, e.g. "PGD-20"


@dataclass
class Plan:
    suite: Suite
    eval_spec: EvalSpec
    train_jobs: list[TrainJob]
    eval_jobs: list[EvalJob]
    columns: list[str]


def _display(ref: PluginRef, refs: list[PluginRef], base: str) -> str:
    """The plain name, or name(k=v, ...) when the same plug-in appears more than once."""
    if sum(r.name == ref.name for r in refs) < 2:
        return base
    changed = non_defaults(ref.params)
    return f"{base}({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else base


def expand(suite: Suite, limit: int | None = None) -> Plan:
    """Plan the grid. ``limit`` caps the number of test examples (it is part of the eval key)."""
    ev = suite.eval
    if limit is not None:
        n = limit if ev.n_examples is None else min(limit, ev.n_examples)
        ev = dataclasses.replace(ev, n_examples=n)
    attacks = suite.attacks or [PluginRef("attack", "none", ATTACKS.get("none").params(), ATTACKS.get("none").version)]
    columns = [_display(a, attacks, attack_label(a.name, a.params)) for a in attacks]
    if len(set(columns)) != len(columns):
        columns = [f"{c} #{i + 1}" for i, c in enumerate(columns)]
    weights = f"raw:{suite.train.selection}"
    train_jobs, eval_jobs = [], []
    for defence in suite.defences:
        display = _display(defence, suite.defences, defence.name)
        for seed in suite.seeds:
            spec = keys.train_spec(suite.dataset, suite.model, suite.threat, suite.train, defence, seed)
            job = TrainJob(keys.digest(spec), spec, defence, seed, display)
            train_jobs.append(job)
            for attack, column in zip(attacks, columns):
                espec = keys.eval_spec(job.key, weights, attack, suite.threat, ev)
                eval_jobs.append(EvalJob(keys.digest(espec), espec, job, weights, attack, column))
    return Plan(suite, ev, train_jobs, eval_jobs, columns)
