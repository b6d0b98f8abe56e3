"""Suite -> Plan: the planner expands a checked suite into its graph of tasks (``bench/plan/tasks.py``).

One ``TrainJob`` per (defence, seed) with the ``PrefixJob`` of the epochs trainings share; per set of
weights (each averager of each run, each ``zoo:`` and ``checkpoints:`` row) a ``SanityJob`` and an
``EvalJob`` per attack and radius (with ``ShardJob`` for ``shards: N``, chained by ``eval.cascade``);
an ``AnalysisJob`` per analysed row. Keys come from ``bench/plan/keys.py``.

The suite was checked when it was loaded (``bench/suite/load.py``); the planner checks only what
needs the plan: ``--limit`` (its own argument), ``analysis.rows`` and the paper table's rows and
columns (the plan's leaderboard rows and columns).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bench.attacks import label as attack_label
from bench.core.errors import ConfigError, show
from bench.core.params import did_you_mean, non_defaults, to_plain
from bench.evaluation.sanity import SANITY_VERSION
from bench.plan import keys
from bench.plan.tasks import (
    AnalysisJob,
    EvalJob,
    Plan,
    PrefixJob,
    SanityJob,
    ShardJob,
    SuiteRef,
    TrainJob,
    WeightsRef,
)
from bench.registry import ATTACKS, DEFENCES
from bench.suite.columns import for_row, row_file
from bench.suite.paper import check_paper
from bench.suite.specs import PluginRef, Suite, WASpec
from bench.types import SharedStart, first_milestone

ANALYSIS_VERSION = 1
PREFIX_VERSION = 1


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
    none = ATTACKS.get("none")
    attacks = suite.attacks or [PluginRef("attack", "none", none.params(), none.version)]
    labels = [attack_label(a.name, a.params, suite.threat.norm) for a in attacks]
    columns = [_display(a, attacks, lab) if labels.count(lab) > 1 else lab for a, lab in zip(attacks, labels)]
    if len(set(columns)) != len(columns):
        columns = [f"{c} #{i + 1}" for i, c in enumerate(columns)]
    externals, corruptions = _column_labels(suite, columns)
    others = [*externals, *corruptions]
    waiting: list[tuple[str, str, int, Path]] = []  # (external column, row, seed, file) of the files not there yet
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
        # the external and corruption columns: at the suite's radius only, never in a cascade
        for column, label in others:
            concrete = for_row(column, row, seed) if column.kind == "external" else column
            if concrete is None:  # a per-row external file not there yet
                waiting.append((label, row, seed, row_file(column, row, seed)))
                continue
            cspec = keys.column_spec(weights.eval_key, plain, concrete, suite.threat, ev)
            eval_jobs.append(EvalJob(keys.digest(cspec), ref, weights, row, seed, cspec, concrete, label))

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
    plan = Plan(suite, ev, train_jobs, eval_jobs, columns, attacks, sanity_jobs, shard_jobs=shard_jobs,
                external_columns=[label for _, label in externals], corruption_columns=corruptions, waiting=waiting)  # fmt: skip
    plan.prefix_jobs = list({p.key: p for p in prefixes.values()}.values())
    plan.analysis_jobs = _analysis_jobs(plan, ref)
    rows = list(dict.fromkeys(e.display for e in eval_jobs))
    if suite.paper is not None:  # the paper's rows and columns must be the plan's
        analysed = list(dict.fromkeys(a.display for a in plan.analysis_jobs))
        all_columns = [*columns, *(label for _, label in others)]
        plan.paper = check_paper(suite.paper, f"{suite.sources.get('paper', suite.path)}: paper", rows, all_columns, analysed)
    reference = suite.leaderboard.mce_reference
    if reference is not None and reference not in rows:
        where = f"{suite.sources.get('leaderboard', suite.path)}: leaderboard.mce_reference"
        raise ConfigError(where, f"no leaderboard row {show(reference)}{did_you_mean(reference, rows)}; rows: {', '.join(rows)}")
    return plan


def _column_labels(suite: Suite, attack_columns: list[str]) -> tuple[list[tuple[Any, str]], list[tuple[Any, str]]]:
    """(ref, column label) of the external and the corruption columns. A corruption's label names its source
    when the suite has both sources; an external column must not take an attack's label."""
    both = len({c.source for c in suite.corruptions}) > 1
    corruptions = [(c, f"{c.label} ({c.source})" if both else c.label) for c in suite.corruptions]
    externals = [(e, e.label) for e in suite.externals]
    taken = [*attack_columns, *(label for _, label in corruptions)]
    for e, label in externals:
        if label in taken:
            where = f"{suite.sources.get('attacks', suite.path)}: attacks"
            raise ConfigError(where, f"external column {label!r} has the name of another column; give it another name")
    return externals, corruptions


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
            where = f"{suite.sources.get('analysis', suite.path)}: analysis.rows[{i}]"
            raise ConfigError(where, f"no leaderboard row {show(row)}{did_you_mean(row, known)}; rows: {', '.join(known)}")
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
