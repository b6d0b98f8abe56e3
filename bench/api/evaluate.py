"""``bench.evaluate(model, ...)``: your own model under the suite's evaluation, in one call.

The model is any ``nn.Module`` mapping a batch of [0,1] images (N x C x H x W, the dataset's shape)
to logits; ``normalize=(mean, std)`` wraps it with the normalisation it expects. Attack entries,
eps and the evaluation settings are parsed exactly like a suite's (the same one-line errors). The
model becomes a one-row plan (a ``checkpoints:`` row held in memory) run by the engine, so its
results are those a suite would give: per-sample flags in the store, keyed by the weights' content
(``bench/evaluation/checkpoints.py``: class name, module tree, ``state_dict`` bytes) and the evaluation spec; a
second call computes nothing, and a suite with the same weights as a ``checkpoints:`` row reuses them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tabulate import tabulate
from torch import nn

from bench.core.errors import BenchError, ConfigError, show
from bench.core.files import default_cache_dir
from bench.core.modes import frozen_eval
from bench.core.params import build
from bench.core.progress import Progress
from bench.data.loader import to_unit
from bench.device.env import resolve_device
from bench.engine import entries
from bench.engine.executors.local import Sequential
from bench.engine.scheduler import run_tasks
from bench.engine.store import Store
from bench.engine.worker import WorkerContext, check_externals
from bench.evaluation.checkpoints import module_digest
from bench.models import Classifier
from bench.plan.expand import expand
from bench.plan.kinds import EVAL
from bench.plan.tasks import Plan
from bench.registry import DATASETS
from bench.report.aggregate import collect_outcomes, worst_case
from bench.report.render import NORMS
from bench.report.rows import CLEAN, CORRUPTION_MEAN, WORST, CellStats, records
from bench.suite.columns import parse_entries
from bench.suite.refs import parse_ref
from bench.suite.specs import CheckpointSpec, CorruptionRef, EvalSpec, ExternalRef, PluginRef, Suite, TrainSpec
from bench.types import ThreatModel, parse_eps

WHERE = "bench.evaluate"
DEFAULT_ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True)
class EvalRequest:
    """A parsed evaluation: what ``bench.evaluate`` and ``bench eval`` hand to :func:`run_evaluation`."""

    dataset: PluginRef
    attacks: list[PluginRef]
    threat: ThreatModel
    eval: EvalSpec
    corruptions: list[CorruptionRef] = field(default_factory=list)  # ``{"corruption": ...}`` entries of ``attacks``
    externals: list[ExternalRef] = field(default_factory=list)  # ``{"external": ...}`` entries (paths relative to the working directory)


def parse_request(
    dataset: Any, attacks: Any, eps: Any, norm: str, n_examples: int | None, batch_size: int, seed: int, labels: dict[str, str],
    precision: str = "fp32",
) -> EvalRequest:
    """Validate the arguments as a suite's ``dataset:``, ``attacks:``, ``threat:`` and ``eval:`` (same errors)."""
    if isinstance(attacks, (str, dict)):
        attacks = [attacks]
    canonical = {n.lower(): n for n in NORMS}.get(norm.lower()) if isinstance(norm, str) else None
    if canonical is None:
        raise ConfigError(labels["norm"], f"expected Linf, L2 or L1, got {show(norm)}")
    ev = build(EvalSpec, {"n_examples": n_examples, "batch_size": batch_size, "subset_seed": seed, "precision": precision}, labels["eval"])
    ref = parse_ref(DATASETS, dataset, labels["dataset"])
    items = list(attacks) if isinstance(attacks, (list, tuple)) else attacks
    attack_refs, corruptions, externals = parse_entries(items, labels["attacks"], Path.cwd(), ref.name, allow_empty=False)
    if any(e.template for e in externals):
        raise ConfigError(labels["attacks"], "an external path with {row} or {seed} is for suites; give the file of this model's adversarial examples")
    threat = ThreatModel(canonical, *parse_eps(eps, labels["eps"], canonical))  # type: ignore[arg-type]
    return EvalRequest(ref, attack_refs, threat, ev, corruptions, externals)


@dataclass
class Evaluation:
    """What ``bench.evaluate`` returns.

    * ``rows``: one row per leaderboard column (Clean, each attack, Worst case): ``accuracy`` and
      its 95 % interval ``ci_low`` / ``ci_high`` in %, ``ci_method``, ``n`` examples, ``eval_key``.
    * ``flags``: per test example (index ``sample_id``, into the dataset's test split), True where
      the model is right: ``Clean``, under each attack, and ``Worst case`` (robust to every attack).
    * ``tidy``: the suite's ``results.csv`` rows for this model (every column: parameters, sanity
      flags, provenance), to concatenate with a suite's results.
    * ``computed``: tasks computed by this call (0 when everything came from the cache).
    """

    rows: pd.DataFrame
    flags: pd.DataFrame
    tidy: pd.DataFrame
    computed: int
    title: str
    warnings: list[str] = field(default_factory=list)  # sanity flags (bench/evaluation/sanity.py)

    @property
    def clean_accuracy(self) -> float:
        """Clean accuracy as a fraction (RobustBench's ``clean_acc``)."""
        return float(self.rows.loc[CLEAN, "accuracy"]) / 100

    @property
    def robust_accuracy(self) -> float:
        """Worst-case robust accuracy over the attacks, as a fraction."""
        return float(self.rows.loc[WORST, "accuracy"]) / 100

    def table(self) -> str:
        body = [
            [col, f"{r.accuracy:.2f}", f"[{r.ci_low:.1f}, {r.ci_high:.1f}]" if pd.notna(r.ci_low) else "—", int(r.n)]
            for col, r in self.rows.iterrows()
        ]  # Corruption mean: a mean of columns, no interval of its own
        lines = [self.title, "", tabulate(body, headers=["", "Accuracy (%)", "95 % interval", "n"], tablefmt="pipe", disable_numparse=True, colalign=("left", "right", "left", "right"))]
        lines += [f"sanity: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<p>{self.title}</p>" + self.rows.to_html(float_format="%.2f")


def evaluate(
    model: nn.Module,
    dataset: Any = "fashion-mnist",
    attacks: Any = DEFAULT_ATTACKS,
    eps: float | str = "8/255",
    norm: str = "Linf",
    n_examples: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    device: str | torch.device = "auto",
    cache_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    *,
    normalize: tuple[Any, Any] | None = None,
    name: str | None = None,
    sanity: bool = True,
    progress: bool = True,
    precision: str = "fp32",
) -> Evaluation:
    """Evaluate ``model`` (any ``nn.Module`` on [0,1] inputs) as a leaderboard row; cached by its weights.

    ``dataset`` and each of ``attacks`` are written as in a suite (``"pgd"``, ``{"pgd": {"steps": 50}}``,
    ``{"autoattack": {"n_examples": 200}}``, a corruption column ``{"corruption": "common-15"}`` or the file of
    your own attack's adversarial examples ``{"external": "advs.pt"}``); ``eps`` as a float or ``"8/255"``;
    ``norm`` ``Linf``, ``L2`` or ``L1`` (any case). ``n_examples`` test examples (None: all) drawn with ``seed``. ``normalize=(mean,
    std)`` when the model expects normalised inputs. ``name`` labels the row (default: the class name).
    ``sanity=False`` skips the gradient-masking checks. ``device="auto"``: CUDA when available; the
    model is copied there if it lives elsewhere (your model is never moved). ``precision`` is a suite's
    ``eval.precision``: ``fp32`` (default), ``bf16``, ``fp16``, ``tf32`` or ``auto`` (the fastest path
    this device runs natively; keyed as ``auto``, the path that ran recorded with the results).
    """
    labels = {k: f"{WHERE}: {k}" for k in ("dataset", "attacks", "eps", "norm", "eval")}
    request = parse_request(dataset, attacks, eps, norm, n_examples, batch_size, seed, labels, precision)
    if not isinstance(model, nn.Module):
        raise BenchError(f"{WHERE}: model: expected a torch.nn.Module, got {type(model).__name__}")
    model_name = _class_name(model)
    if normalize is not None:
        try:
            mean, std = (tuple(float(v) for v in np.atleast_1d(part)) for part in normalize)
        except (TypeError, ValueError):
            raise ConfigError(f"{WHERE}: normalize", f"expected (mean, std) per channel, got {show(normalize)}") from None
        model = Classifier(model, mean, std)
    return run_evaluation(model, request, device, cache_dir, data_dir, name=name, model_name=model_name, sanity=sanity, progress=progress)


def _class_name(model: nn.Module) -> str:
    """The model's class name; for a bench classifier (normalisation + network), the network's."""
    return type(model.net).__qualname__ if isinstance(model, Classifier) else type(model).__qualname__


def run_evaluation(
    model: nn.Module,
    request: EvalRequest,
    device: str | torch.device = "auto",
    cache_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    *,
    name: str | None = None,
    model_name: str | None = None,
    sanity: bool = True,
    progress: bool = True,
) -> Evaluation:
    """Plan ``model`` as a one-row suite, run what the cache lacks (in this process), collect the rows."""
    model_name = model_name or _class_name(model)
    row = CheckpointSpec(name or model_name, PluginRef("model", model_name, None, 1), None, module_digest(model))
    suite = Suite(
        name="evaluate", path=Path(f"<{WHERE}>"), dataset=request.dataset, model=row.model, threat=request.threat,
        train=TrainSpec(), defences=[], attacks=request.attacks, eval=request.eval, seeds=[0], checkpoints=[row],
        corruptions=request.corruptions, externals=request.externals,
    )  # fmt: skip
    plan = expand(suite)
    if not sanity:
        plan.sanity_jobs = []
    store = Store(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    computed = 0
    if any(not store.has(t.kind, t.key) for t in plan.tasks):
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        prog = Progress(progress)
        ctx = WorkerContext(plan, store, dev, str(Path(data_dir).expanduser()) if data_dir else None, prog)
        on_device = model if all(p.device == dev for p in [*model.parameters(), *model.buffers()]) else copy.deepcopy(model).to(dev)
        _check_forward(on_device, ctx)
        ctx.preload(plan.train_jobs[0].key, on_device)
        check_externals(plan, store, ctx.data_dir)
        result = run_tasks(plan, store, Sequential(ctx), prog, store.root / "logs", debug=True)
        computed = sum(o.status == "ran" for o in result.outcomes)
    return _collect(plan, store, computed)


def _check_forward(model: nn.Module, ctx: WorkerContext) -> None:
    """One batch of two test images: the model must run and return one logit per class."""
    info = ctx.splits.info
    _, x, _ = ctx.test_data(2)
    shape = tuple(x.shape)
    try:
        with torch.no_grad(), frozen_eval(model):
            out = model(to_unit(x))
    except Exception as e:  # noqa: BLE001 - the user's model: say what it was given
        raise BenchError(f"{WHERE}: model: fails on {info.name} inputs of shape {shape} in [0,1]: {type(e).__name__}: {e}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (shape[0], info.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BenchError(f"{WHERE}: model: returns {got} for {shape[0]} {info.name} images; expected logits of shape ({shape[0]}, {info.num_classes})")


def _collect(plan: Plan, store: Store, computed: int) -> Evaluation:
    tidy, _ = collect_outcomes(plan, store)
    if not tidy:
        raise BenchError(f"{WHERE}: nothing evaluated (see the messages above)")
    first, suite = tidy[0], plan.suite
    clean = {"column": CLEAN, "accuracy": 100 * first.clean_acc, "n": first.clean_n, "eval_key": None, **_interval(first.clean_cell)}
    order = [*plan.worst_columns, WORST, *(label for _, label in plan.corruption_columns), CORRUPTION_MEAN]  # as the leaderboard
    rows = [clean] + [
        {"column": r.attack, "accuracy": 100 * r.robust_acc, "n": r.n, "eval_key": r.eval_key, **_interval(r.cell)}
        for r in sorted(tidy, key=lambda r: order.index(r.attack) if r.attack in order else len(order))
    ]
    frame = pd.DataFrame(rows).set_index("column")[["accuracy", "ci_low", "ci_high", "ci_method", "n", "eval_key"]]
    n = first.clean_n
    title = (
        f"{first.display_name} on {suite.dataset.name}, {NORMS[suite.threat.norm]} ε = {suite.threat.eps_text}, "
        f"{n} test examples (subset seed {plan.eval_spec.subset_seed}); accuracy in % with its 95 % interval"
    )
    warnings = [w for w in first.flags.split("; ") if w]
    return Evaluation(frame, _flags(plan, store), pd.DataFrame(records(tidy)), computed, title, warnings)


def _interval(cell: CellStats | None) -> dict[str, Any]:
    """A cell's 95 % interval (in %) and its method; None each when the cell has no statistics."""
    return {k: getattr(cell, k) if cell else None for k in ("ci_low", "ci_high", "ci_method")}


def _flags(plan: Plan, store: Store) -> pd.DataFrame:
    """Per-sample correctness: Clean, each attack, Worst case (NA where an attack saw fewer examples)."""
    found = [(j.column, entries.read_flags(store, EVAL, j.key)) for j in plan.eval_jobs if j.threat is None and store.has(j.kind, j.key)]
    ids = max((f["sample_id"] for _, f in found), key=len)
    largest = next(f for _, f in found if len(f["sample_id"]) == len(ids))
    columns: dict[str, pd.Series] = {CLEAN: pd.Series(largest["clean"], index=ids)}
    columns.update({col: pd.Series(f["robust"], index=f["sample_id"]) for col, f in found})
    over = [f for (col, f) in found if col in plan.worst_columns]  # the attacks and external columns, not the corruptions
    if len(over) == len(plan.worst_columns):
        common, worst = worst_case([(f["sample_id"], f["robust"]) for f in over])
        columns[WORST] = pd.Series(worst, index=common)
    out = pd.DataFrame(index=pd.Index(ids, name="sample_id"))
    for col, series in columns.items():
        series = series.reindex(ids)
        out[col] = series.astype(bool) if series.notna().all() else series.astype("boolean")
    return out
