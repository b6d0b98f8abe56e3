"""Running one task: ``run(task, ctx)`` writes exactly one store entry.

``WorkerContext`` holds what tasks of one suite share inside one process (the dataset, the training
and test tensors on the device, loaded reference models); it is built lazily, so a worker that only
evaluates never prepares training data. ``run_ref`` runs a task in a fresh process from its suite
reference and key: the suite is re-planned there and the task found by key, so nothing but plain
data crosses the process boundary.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.analysis.run import analyze
from bench.core.errors import BenchError
from bench.core.params import to_plain
from bench.core.progress import Progress
from bench.data import data_roots, load_dataset
from bench.data.loader import to_unit
from bench.device.env import provenance
from bench.device.native import resolve
from bench.device.precision import configure, fuse_bn, prepare
from bench.engine import entries
from bench.engine.store import Store
from bench.evaluation import randomised
from bench.evaluation.checkpoints import load_row
from bench.evaluation.columns import corrupted_images, corruption_flags, external_flags
from bench.evaluation.evaluate import Flags, parity, robust_flags, subset_indices
from bench.evaluation.external import ExternalError, load_external
from bench.evaluation.parity import pool as pool_parity
from bench.evaluation.sanity import sanity_checks
from bench.models import build
from bench.models.zoo import load_zoo_model
from bench.plan import kinds, shards
from bench.plan.expand import expand, shared_start
from bench.plan.tasks import (
    AnalysisJob,
    EvalJob,
    Plan,
    PrefixJob,
    SanityJob,
    ShardJob,
    SuiteRef,
    Task,
    TrainJob,
    WeightsRef,
    wa_tag,
)
from bench.registry import ATTACKS, CORRUPTIONS, DEFENCES
from bench.suite.load import load_suite
from bench.training.train import Selection, SharedState, TrainData, TrainState, prepare_data, train_model
from bench.types import DatasetSplits, ThreatModel


def source_sha(fn: Any) -> str | None:
    try:
        return hashlib.sha256(Path(inspect.getsourcefile(fn) or "").read_bytes()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


class WorkerContext:
    def __init__(self, plan: Plan, store: Store, device: torch.device, data_dir: str | None = None, progress: Progress | None = None):
        self.plan, self.store, self.device, self.data_dir = plan, store, device, data_dir
        self.progress = progress or Progress(False)
        self._splits: DatasetSplits | None = None
        self._train_data: TrainData | None = None
        self._zoo: dict[str, torch.nn.Module] = {}
        self._external: dict[str, torch.nn.Module] = {}  # checkpoints rows by train key
        self._preloaded: set[str] = set()  # of those, the models handed to bench.evaluate
        self._test: dict[int, tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}
        self._paths: dict[str, str] = {}
        self.provenance = provenance(device)
        configure(device)

    def path(self, kind: str) -> str:
        """The path ``train.precision`` (``kind="train"``) or ``eval.precision`` runs on this worker's device:
        ``auto`` resolved here, where the task runs (``bench/device/native.py``; the probe is kept in the cache)."""
        if kind not in self._paths:
            spec = self.plan.suite.train if kind == "train" else self.plan.eval_spec
            self._paths[kind] = resolve(spec.precision, self.device, self.store.root)
        return self._paths[kind]

    @property
    def splits(self) -> DatasetSplits:
        if self._splits is None:
            suite = self.plan.suite
            self._splits = load_dataset(suite.dataset.name, suite.dataset.params, self.data_dir)
        return self._splits

    @property
    def train_data(self) -> TrainData:
        if self._train_data is None:
            self._train_data = prepare_data(self.splits, self.plan.suite, self.device)
        return self._train_data

    def test_data(self, n: int | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The evaluated test examples (ids into the test set, uint8 inputs, labels) on the device.

        ``n`` takes the first n of the suite's seeded subset: subsets are nested, so per-sample
        flags of attacks run on different sizes align on their common ids.
        """
        ev, splits = self.plan.eval_spec, self.splits
        total = len(splits.test_y) if ev.n_examples is None else min(ev.n_examples, len(splits.test_y))
        n = total if n is None else min(n, total)
        if n not in self._test:
            ids = subset_indices(len(splits.test_y), n, ev.subset_seed)
            index = torch.from_numpy(ids)
            self._test[n] = (ids, splits.test_x[index].to(self.device), splits.test_y[index].to(self.device))
        return self._test[n]

    def preload(self, train_key: str, model: torch.nn.Module) -> None:
        """Use ``model`` for the checkpoints row of ``train_key`` (``bench.evaluate``'s in-memory model)."""
        self._external[train_key] = model
        self._preloaded.add(train_key)

    def load_model(self, weights: WeightsRef) -> torch.nn.Module:
        """The weights' model on the device, with the evaluation fast paths: BatchNorms folded with
        ``eval.fuse_bn`` (a copy), channels_last with ``eval.channels_last``. A model handed to
        ``bench.evaluate`` is used as it is: it is its owner's."""
        model = self._load_model(weights)
        ev = self.plan.eval_spec
        if weights.train_key in self._preloaded:
            return model
        if ev.fuse_bn:
            model = fuse_bn(model)
        return prepare(model, channels_last=ev.channels_last)

    def _load_model(self, weights: WeightsRef) -> torch.nn.Module:
        suite = self.plan.suite
        if weights.zoo:
            if weights.zoo not in self._zoo:
                self._zoo[weights.zoo] = load_zoo_model(weights.zoo, suite.dataset.name, self.store.root / "zoo", self.device)
            return self._zoo[weights.zoo]
        if weights.source is not None:
            if weights.train_key not in self._external:
                self._external[weights.train_key] = load_row(weights.source, self.splits.info, self.device)
            return self._external[weights.train_key]
        info = self.splits.info
        model = build(suite.model.name, suite.model.params, info.num_classes, info.shape, info.mean, info.std)
        model.load_state_dict(entries.load_weights(self.store, weights.train_key, weights.tag, weights.checkpoint, self.device))
        return model.to(self.device)


def run(task: Task, ctx: WorkerContext) -> None:
    """Compute ``task`` and write its entry (the caller holds its claim)."""
    RUNS[kinds.kind_of(task)](task, ctx)


def _prefix(job: PrefixJob, ctx: WorkerContext) -> None:
    """The epochs several trainings share: trained once, the state after them saved as the entry."""
    partial = ctx.store.partial(job.kind, job.key)
    result = train_model(
        job.as_train(), ctx.plan.suite, ctx.splits, ctx.train_data, ctx.device, ctx.progress, state_dir=partial, stop_after=job.epochs,
        precision=ctx.path("train"),
    )  # fmt: skip
    manifest = {
        "seconds": round(result.seconds, 3),
        "defence_source_sha": source_sha(DEFENCES.get(job.defence.name).fn),
        "data_source": ctx.splits.source,
        "provenance": ctx.provenance,
        "shared_by": list(job.shared_by),
        "fast_paths": _fast_paths(ctx.plan.suite.train, result.precision),
    }
    entries.write_prefix(ctx.store, job.key, partial / TrainState.FILE, job.spec, manifest)


def _shared_state(job: TrainJob, ctx: WorkerContext) -> SharedState | None:
    """The state of the shared start ``job`` continues from, with its defence's logs over those epochs."""
    if not job.start:
        return None
    state = entries.load_state(ctx.store, job.start, ctx.device)  # checked, weights_only
    declared = shared_start(job.defence, ctx.plan.suite.train)  # None for the defence the start is a run of
    return SharedState(job.start, state, declared.logs if declared else {})


def _train(job: TrainJob, ctx: WorkerContext) -> None:
    store = ctx.store
    result = train_model(
        job, ctx.plan.suite, ctx.splits, ctx.train_data, ctx.device, ctx.progress, state_dir=store.partial(job.kind, job.key),
        start=lambda: _shared_state(job, ctx), precision=ctx.path("train"),
    )  # fmt: skip
    selections: dict[str, tuple[Any, Selection]] = {"raw": (None, result.raw)}
    selections.update({wa_tag(wa): (wa, sel) for wa, sel in result.averaged.items()})
    manifest = {
        "seconds": round(result.seconds, 3),
        "defence_source_sha": source_sha(DEFENCES.get(job.defence.name).fn),
        "data_source": ctx.splits.source,
        "provenance": ctx.provenance,
        "health": result.health,
        "resumed_from_epoch": result.resumed_from,
        "started_from": result.started_from,
        "fast_paths": _fast_paths(ctx.plan.suite.train, result.precision),
        "weights": {
            tag: {"averaging": to_plain(wa), "best_epoch": sel.best_epoch, "checkpoints": sorted(sel.states)}
            for tag, (wa, sel) in selections.items()
        },
    }
    weights = {tag: sel.states for tag, (_, sel) in selections.items()}
    entries.write_train(store, job.key, job.spec, result.log, weights, manifest)


def _threat(job: EvalJob | ShardJob, ctx: WorkerContext) -> ThreatModel:
    """The job's radius: the suite's (the leaderboard's) or an ``eval.eps`` one."""
    return job.threat or ctx.plan.suite.threat


def _attack(job: EvalJob | ShardJob, ctx: WorkerContext) -> Any:
    entry, threat, params = ATTACKS.get(job.attack.name), _threat(job, ctx), job.attack.params
    return lambda m, xb, yb: entry.fn(m, xb, yb, threat, params)


def _evaluate(job: EvalJob, ctx: WorkerContext) -> None:
    if job.group != "attack":
        return _column(job, ctx)
    ids, x, y = ctx.test_data(job.attack.n_examples)
    if job.shards:  # merge the shards' flags by sample id
        parts = [entries.read_flags(ctx.store, kinds.SHARD, k) for k in job.shards]
        metrics = [entries.read_metrics(ctx.store, kinds.SHARD, k) for k in job.shards]
        flags = shards.merge(parts, ids, job.label)
        seconds = sum(m["seconds"] for m in metrics)
        result = Flags(flags["clean"], flags["robust"], max(m["max_dist"] for m in metrics), seconds)
        result.model_check = randomised.merged([m.get("model_check") for m in metrics])
        if any("parity" in m for m in metrics):  # each shard checked a slice of its own points in fp32
            result.parity = pool_parity([m["parity"] for m in metrics if "parity" in m])
    else:
        mask = _survivors(job, ctx, ids, x.device)
        result = _attacked(job, ctx, x, y, f"{job.display}/{job.column}", attack_mask=mask)
    _write_flags(job, ctx, ids, result, {"shards": list(job.shards)} if job.shards else {})
    ctx.progress.log(
        f"  {job.label}: clean {100 * result.clean_acc:.2f}%, robust {100 * result.robust_acc:.2f}% ({result.seconds:.1f}s)"
    )


def _attacked(job: EvalJob | ShardJob, ctx: WorkerContext, x: torch.Tensor, y: torch.Tensor, name: str, **options: Any) -> Flags:
    """The flags of ``job``'s attack on ``x, y`` with the suite's evaluation options (resumable from the
    task's partial state; ``options``: ``attack_mask``, ``batch_seeds``) and, in a path other than fp32,
    the fp32 parity slice of these points. The attack's randomness (and the slice) is a function of the task's key."""
    ev, threat, attack, path = ctx.plan.eval_spec, _threat(job, ctx), _attack(job, ctx), ctx.path("eval")
    model = ctx.load_model(job.weights)
    seed = int(job.key[:8], 16)
    torch.manual_seed(seed)
    result = robust_flags(
        model, x, y, attack, threat.eps_float, ev.batch_size, name, ctx.progress,
        state=ctx.store.partial(job.kind, job.key) / "progress.npz", norm=threat.norm, precision=path, **options,
    )  # fmt: skip
    if path != "fp32":
        torch.manual_seed(seed)
        result.parity = parity(model, x, y, attack, threat.eps_float, ev.batch_size, name, result, seed, path, threat.norm,
                               options.get("attack_mask"))  # fmt: skip
    return result


def _column(job: EvalJob, ctx: WorkerContext) -> None:
    """A corruption or external column (``bench/evaluation/columns.py``): the model's verdicts on other images of the test examples."""
    ids, x, y = ctx.test_data()
    model, bs, name, ref = ctx.load_model(job.weights), ctx.plan.eval_spec.batch_size, f"{job.display}/{job.column}", job.attack
    torch.manual_seed(int(job.key[:8], 16))  # a randomised model's draws
    counts: dict[str, int] = {}
    if ref.kind == "corruption":
        images = corrupted_images(ctx.plan.suite.dataset.name, ref.name, ref.severity, ref.source, ids, x, y, data_roots(ctx.data_dir))
        result = corruption_flags(model, x, y, lambda a, b: to_unit(images[a:b]), bs, name, ctx.progress)
    else:  # checked again here, where it is evaluated: a file that fails leaves nothing in the store
        external = load_external(ref.path, ctx.splits.test_x, ctx.plan.suite.threat, order=ids)
        if external.digest != ref.digest:
            raise BenchError(f"{ref.path}: changed since the suite was planned (its content is what this column is keyed by); run again")
        result, counts = external_flags(model, x, y, ids, external, bs, name, ctx.progress)
    _write_flags(job, ctx, ids, result, metrics={f"external_{k}": v for k, v in counts.items()})
    ctx.progress.log(f"  {job.label}: clean {100 * result.clean_acc:.2f}%, {ref.kind} {100 * result.robust_acc:.2f}% ({result.seconds:.1f}s)")


def check_externals(plan: Plan, store: Store, data_dir: str | None) -> None:
    """Load and check each external column's file not evaluated yet against the test images it will be evaluated on
    (``bench/evaluation/external.py``); the task that evaluates it checks it again."""
    todo = list(dict.fromkeys(j.attack for j in plan.eval_jobs if j.group == "external" and not store.has(j.kind, j.key)))
    if not todo:
        return
    suite, ev = plan.suite, plan.eval_spec
    splits = load_dataset(suite.dataset.name, suite.dataset.params, data_dir)  # as the workers will (cached per process)
    ids = subset_indices(len(splits.test_y), ev.n_examples, ev.subset_seed)
    for ref in todo:
        try:
            load_external(ref.path, splits.test_x, suite.threat, order=ids)
        except ExternalError as e:
            raise BenchError(f"{suite.sources.get('attacks', suite.path)}: attacks: external {ref.label!r}: {e}") from None


def _survivors(job: EvalJob, ctx: WorkerContext, ids: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """eval.cascade: which of ``ids`` no evaluation to the left broke (points it did not evaluate count as unbroken)."""
    if not job.after:
        return None
    keep = np.ones(len(ids), dtype=bool)
    for key in job.after:
        flags = entries.read_flags(ctx.store, kinds.EVAL, key)
        broken = flags["sample_id"][~flags["robust"].astype(bool)]
        keep &= ~np.isin(ids, broken)
    return torch.from_numpy(keep).to(device)


def _shard(job: ShardJob, ctx: WorkerContext) -> None:
    bs = ctx.plan.eval_spec.batch_size
    ids, x, y = ctx.test_data(job.attack.n_examples)
    batches = shards.shard_batches(len(ids), bs, job.count, job.index)
    part = slice(batches.start * bs, batches.stop * bs)
    name = f"{job.display}/{job.column}#{job.index}"
    result = _attacked(job, ctx, x[part], y[part], name, batch_seeds=shards.batch_seeds(job.spec, batches))
    _write_flags(job, ctx, ids[part], result)


def _write_flags(
    job: EvalJob | ShardJob, ctx: WorkerContext, ids: np.ndarray, flags: Flags, extra: dict | None = None, metrics: dict | None = None
) -> None:
    """The entry of an evaluation or a shard: per-sample flags, spec, metrics (with ``metrics``), manifest (with ``extra``)."""
    metrics = {
        **(metrics or {}),
        "n": len(ids),
        "clean_acc": flags.clean_acc,
        "robust_acc": flags.robust_acc,
        "max_dist": flags.max_dist,
        "seconds": round(flags.seconds, 3),
    }
    if flags.parity is not None:  # a low-precision evaluation: the fp32 parity slice
        metrics["parity"] = flags.parity
    if flags.model_check is not None:  # randomised / probability outputs (bench/evaluation/randomised.py)
        metrics["model_check"] = flags.model_check
    manifest = {
        "attack_source_sha": _source(job.attack),
        "provenance": ctx.provenance,
        "fast_paths": _fast_paths(ctx.plan.eval_spec, ctx.path("eval")),
    }
    entries.write_flags(ctx.store, kinds.kind_of(job), job.key, ids, flags.clean, flags.robust, job.spec, metrics,
                        {**manifest, **(extra or {})})  # fmt: skip


def _source(ref: Any) -> str | None:
    """The source hash of what computed a column: the attack, or the corruption's generator (None: released files, external)."""
    if ref.kind == "attack":
        return source_sha(ATTACKS.get(ref.name).fn)
    return source_sha(CORRUPTIONS.get(ref.name).fn) if ref.kind == "corruption" and ref.source == "generated" else None


def _fast_paths(spec: Any, ran: str) -> dict[str, Any]:
    """The fast-path options of a train or eval spec, as its entries' manifests record them, with the
    precision path that actually ran (``precision_ran``: ``auto`` resolved on this device)."""
    out = {k: getattr(spec, k) for k in ("precision", "channels_last", "compile", "fuse_bn") if hasattr(spec, k)}
    return {**out, "precision_ran": ran}


def _sanity(job: SanityJob, ctx: WorkerContext) -> None:
    _, x, y = ctx.test_data()
    model = ctx.load_model(job.weights)
    torch.manual_seed(int(job.key[:8], 16))
    checks = sanity_checks(model, x, y, ctx.plan.eval_spec.batch_size, ctx.path("eval"))
    entries.write_checks(ctx.store, job.key, checks)


def _analyze(job: AnalysisJob, ctx: WorkerContext) -> None:
    plan = ctx.plan
    spec = plan.suite.analysis
    assert spec is not None
    _, x, y = ctx.test_data(spec.n_images)
    model = ctx.load_model(job.weights)
    threat = plan.suite.threat
    attacks = {
        column: (lambda m, xb, yb, fn=ATTACKS.get(a.name).fn, p=a.params: fn(m, xb, yb, threat, p))
        for a, column in zip(plan.attacks, plan.columns)
        if ATTACKS.get(a.name).family in ("fgsm", "iterative")
    }
    arrays, metrics = analyze(model, x.float() / 255, y, threat, spec, int(job.key[:8], 16), attacks, ctx.path("eval"))
    entries.write_analysis(ctx.store, job.key, arrays, metrics)
    ctx.progress.log(
        f"  {job.label}: low-frequency energy " + ", ".join(f"{k} {v:.3f}" for k, v in metrics["energy"].items())
    )


RUNS = {kinds.PREFIX: _prefix, kinds.TRAIN: _train, kinds.EVAL: _evaluate, kinds.SHARD: _shard, kinds.SANITY: _sanity,
        kinds.ANALYSIS: _analyze}  # fmt: skip


def plan_for(ref: SuiteRef) -> Plan:
    """Re-plan a task's suite in this process; refuses a suite file changed since the task was planned."""
    suite = load_suite(ref.path, ref.overrides)
    if suite.digest != ref.digest:
        raise BenchError(f"{ref.path}: the suite changed since its tasks were planned; plan it again")
    return expand(suite, ref.limit)


def run_ref(ref: SuiteRef, key: str, cache_dir: str | Path, device: torch.device, data_dir: str | None = None) -> bool:
    """Run one task in this (fresh) process, given only plain data: its suite reference and its key.

    Returns whether this process computed the entry: a task claimed by another live process is
    waited for and its entry reused (or taken over when the claim expires), never computed twice.
    """
    plan = plan_for(ref)
    task = plan.task(key)
    if task is None:
        raise BenchError(f"{ref.path}: no task {key[:12]} in the suite's plan")
    store = Store(cache_dir)
    while not store.try_claim(task.kind, task.key):
        if store.has(task.kind, task.key):
            return False
        time.sleep(1.0)
    try:
        if store.has(task.kind, task.key):
            return False
        run(task, WorkerContext(plan, store, device, data_dir))
        return True
    finally:
        store.release(task.kind, task.key)
