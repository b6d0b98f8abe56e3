"""THE training loop: the only place that owns the optimiser, the schedule and checkpoint selection.

Per epoch: set the LR from the schedule; for each batch call the defence's pure loss
``fn(model, x, y, params, ctx)`` (in the path ``train.precision`` resolves to on this device,
``bench/device/native.py``: bf16/fp16 autocast, with a ``GradScaler`` for fp16, or TF32 on CUDA; as are the
validation attacks, the logit gap's attack and the averagers' BN pass; the layout and
``torch.compile`` of ``train.channels_last`` / ``train.compile``, and ``train.fuse_bn``'s
BN-folded views of the trained and averaged models, for eval-mode adversaries, validation and the
logit gap: ``bench/device/precision.py``), then
zero_grad / backward / step, with no host sync inside the step loop (losses are summed on the
device and read once per epoch); check the loss is finite;
evaluate the validation split (clean, and PGD when the selection needs it); keep the ``last`` and
``best_val`` weights; record training health; save the whole training state (``TrainState``).

Resume: the state saved at the end of every epoch holds the model, the optimiser, the averagers,
the selection, the log, the step, the data-order generator and every RNG. A run killed at any point
restarts from the last completed epoch and ends bit-identical (on CPU) to an uninterrupted run.
Every evaluation inside training (validation, logit gap, averagers' BN pass) forks the RNG, so
what is measured or averaged never changes the trajectory of the raw weights. The same state
saved after a shared start's epochs (a ``prefix`` task, ``stop_after``) is where the trainings that
share them continue from (``start``).
"""

from __future__ import annotations

import io
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.analysis.fourier import frequency_regularizer
from bench.attacks.pgd import pgd, step_size
from bench.core.errors import BenchError
from bench.core.faults import fault_point
from bench.core.files import atomic_write_bytes
from bench.core.modes import frozen_eval
from bench.core.progress import Progress
from bench.data.loader import batches, split_indices
from bench.device.env import seed_everything
from bench.device.native import resolve
from bench.device.precision import FoldedView, attack_model, autocast, prepare, tf32_scope, to_layout
from bench.evaluation.evaluate import robust_flags
from bench.models import build
from bench.plan.tasks import TrainJob
from bench.registry import DEFENCES
from bench.suite.specs import OptimizerSpec, Suite, WASpec
from bench.training.averaging import Averager
from bench.types import DatasetSplits, LossOut, TrainContext


class TrainingError(BenchError):
    """Training diverged (non-finite loss); nothing is cached."""


@dataclass
class TrainData:
    """Training and validation splits on the device (uint8), chosen by the train spec."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


def prepare_data(splits: DatasetSplits, suite: Suite, device: torch.device) -> TrainData:
    spec = suite.train
    tr, val = split_indices(len(splits.train_y), spec.val_fraction, spec.val_seed)
    if spec.subset is not None and spec.subset < len(tr):
        tr = np.sort(tr[np.random.RandomState(spec.val_seed + 1).permutation(len(tr))[: spec.subset]])
    if spec.val_examples is not None:
        val = val[: spec.val_examples]
    if spec.selection == "best_val" and len(val) == 0:
        raise BenchError(f"{suite.path}: train.val_fraction: the validation split is empty (best_val needs one)")
    take = lambda t, idx: t[torch.from_numpy(idx)].to(device)  # noqa: E731
    return TrainData(
        take(splits.train_x, tr), take(splits.train_y, tr), take(splits.train_x, val), take(splits.train_y, val)
    )


def make_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, nesterov=spec.nesterov
        )
    return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


@dataclass
class Selection:
    """Tracks the ``last`` and ``best_val`` weights of one model (raw or averaged)."""

    best_score: float = -math.inf
    best_epoch: int | None = None
    states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def offer(self, model: nn.Module, epoch: int, score: float | None) -> None:
        if score is not None and score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.states["best_val"] = _cpu_state(model)

    def finish(self, model: nn.Module) -> None:
        self.states["last"] = _cpu_state(model)


@dataclass
class TrainResult:
    raw: Selection
    averaged: dict[WASpec, Selection]
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    health: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None  # the epoch a resumed run started from
    started_from: dict[str, Any] | None = None  # the shared start (prefix entry) the run continued from
    precision: str = "fp32"  # the path train.precision ran (bench/device/native.py)


@dataclass(frozen=True)
class SharedState:
    """The saved state of a shared start (a ``prefix`` entry) for a training to continue from.

    ``logs``: the continuing defence's own logged values over those epochs (``SharedStart.logs``),
    added to the start's epoch records as its loop would have logged them (after ``train_loss``).
    """

    key: str
    state: dict
    logs: dict[str, float]

    def record(self, record: dict) -> dict:
        out: dict = {}
        for k, v in record.items():
            out[k] = v
            if k == "train_loss":
                out.update({f"train_{name}": value for name, value in self.logs.items()})
        return out


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def forked_rng(device: torch.device):
    """Run a block on a copy of the global RNG (CPU and ``device``): it cannot change what follows."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def validate(model: nn.Module, suite: Suite, data: TrainData, robust: bool, precision: str = "fp32") -> dict[str, float]:
    """Clean (and PGD, when ``robust``) accuracy on the validation split; the attack in ``precision``
    (the path ``train.precision`` runs)."""
    if len(data.val_y) == 0:
        return {}
    eps = suite.threat.eps_float
    va = suite.train.val_attack
    if robust:
        attack = partial(pgd, eps=eps, alpha=step_size(va.alpha, eps), steps=va.steps, norm=suite.threat.norm)
    else:
        attack = lambda m, x, y: x  # noqa: E731
    with forked_rng(data.val_x.device):
        flags = robust_flags(
            model, data.val_x, data.val_y, attack, eps, 512, "val", norm=suite.threat.norm, precision=precision
        )
    out = {"val_clean": flags.clean_acc}
    if robust:
        out["val_robust"] = flags.robust_acc
    return out


def logit_gap(model: nn.Module, suite: Suite, data: TrainData, n: int = 128, precision: str = "fp32") -> float:
    """FR's spectral logit gap (batch2d DFT, methods.md 6.4) on a fixed batch, logged every epoch.

    The quantity FR/SAR minimise, measured for every defence: val examples (train ones without a
    val split), PGD at the val-attack settings in ``precision`` (logits in fp32), eval mode; the
    RNG is forked so logging never changes the training trajectory.
    """
    x_u8, y = (data.val_x, data.val_y) if len(data.val_y) else (data.train_x, data.train_y)
    x, y = x_u8[:n].float() / 255, y[:n]
    eps = suite.threat.eps_float
    va = suite.train.val_attack
    with forked_rng(x.device), frozen_eval(model):
        with autocast(x.device, precision):
            x_adv = pgd(attack_model(model, precision), x, y, eps, step_size(va.alpha, eps), va.steps, norm=suite.threat.norm)
        with torch.no_grad():
            return float(frequency_regularizer(model(x_adv), model(x)))


def _evaluated(model: nn.Module, view: FoldedView | None) -> nn.Module:
    """What validation and the logit gap run: with ``train.fuse_bn`` the model's BN-folded view (its
    eval-mode function, re-folded from the live weights and statistics, no copy), else the model."""
    return model if view is None else view.current()


CHANCE_AFTER_EPOCHS = 3  # validation accuracy still near chance after this many epochs: flagged
COLLAPSE_DROP = 0.2  # validation robust accuracy falling this much in one epoch: flagged


def health_check(health: dict[str, Any], record: dict, epoch: int, epochs: int, num_classes: int, best_robust: float) -> None:
    """Record training health in ``health``: accuracy at chance, collapse of robust accuracy."""
    clean = record.get("val_clean")
    if clean is not None and epoch == min(CHANCE_AFTER_EPOCHS, epochs) - 1 and clean < 1.5 / num_classes:
        health["at_chance_epoch"] = epoch + 1
    robust = record.get("val_robust")
    if robust is not None and best_robust - robust > COLLAPSE_DROP and robust < 0.5 * best_robust:
        health.setdefault("robust_collapse_epochs", []).append(epoch + 1)


class TrainState:
    """Everything the loop needs to continue after a given epoch, saved and loaded as one file.

    Loaded with ``weights_only=True``: tensors, numbers, strings, lists and dicts only.
    """

    FILE = "state.pt"

    def __init__(self, folder: Path | None, key: str) -> None:
        self.path = None if folder is None else Path(folder) / self.FILE
        self.key = key

    def save(self, epoch: int, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, g: torch.Generator,
             avgs: list[Averager], result: TrainResult, precision: str = "fp32",
             scaler: torch.amp.GradScaler | None = None) -> None:  # fmt: skip
        if self.path is None:
            return
        np_state = np.random.get_state()
        state = {
            "key": self.key,
            "epoch": epoch,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "data_generator": g.get_state(),
            "averagers": [{"model": a.model.state_dict(), "n": a.n, "generator": a.generator.get_state()} for a in avgs],
            "selection": [_selection_state(result.raw)] + [_selection_state(result.averaged[a.spec]) for a in avgs],
            "log": result.log,
            "health": result.health,
            "precision": precision,  # the path it ran: a resumed or continued run keeps it
            "scaler": scaler.state_dict() if scaler is not None else {},
            "seconds": result.seconds,
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "rng_numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "rng_python": random.getstate(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        atomic_write_bytes(self.path, data, fault=f"train-ckpt:{epoch + 1}")

    def load(self, device: torch.device) -> dict | None:
        """The saved state, or None; a damaged one is reported (even with --quiet) and never trusted."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
            if state.get("key") != self.key:
                raise ValueError("it belongs to another run")
        except Exception as e:  # noqa: BLE001 - unpickling a damaged file raises many kinds of errors
            print(f"resume state {self.path} is unusable ({type(e).__name__}); training from epoch 1", file=sys.stderr)
            return None
        return state

    def restore(self, state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, g: torch.Generator,
                avgs: list[Averager], result: TrainResult, scaler: torch.amp.GradScaler | None = None) -> tuple[int, int]:  # fmt: skip
        """Put the saved state back; returns (next epoch, step)."""
        model.load_state_dict(state["model"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        optimizer.load_state_dict(state["optimizer"])
        g.set_state(state["data_generator"])
        for a, saved in zip(avgs, state["averagers"], strict=True):
            a.model.load_state_dict(saved["model"])
            a.n = saved["n"]
            a.generator.set_state(saved["generator"])
        for sel, saved in zip([result.raw, *(result.averaged[a.spec] for a in avgs)], state["selection"], strict=True):
            sel.best_score, sel.best_epoch = saved["best_score"], saved["best_epoch"]
            sel.states = {k: {n: t.cpu() for n, t in v.items()} for k, v in saved["states"].items()}
        result.log, result.health, result.seconds = list(state["log"]), dict(state["health"]), state["seconds"]
        torch.set_rng_state(state["rng_torch"].cpu())
        if state["rng_cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
        kind, keys_, pos, has_gauss, gauss = state["rng_numpy"]
        np.random.set_state((kind, keys_.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["rng_python"]
        random.setstate((version, tuple(internal), gauss_next))
        return state["epoch"] + 1, state["step"]


def _selection_state(sel: Selection) -> dict[str, Any]:
    return {"best_score": sel.best_score, "best_epoch": sel.best_epoch, "states": sel.states}


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, fn: Any, x: torch.Tensor, y: torch.Tensor, params: Any,
    ctx: TrainContext, precision: str = "fp32", channels_last: bool = False, scaler: torch.amp.GradScaler | None = None,
) -> LossOut:  # fmt: skip
    """One step of the defence ``fn``: its whole loss (attack steps included) in the resolved path
    ``precision`` (``ctx.precision`` is what its adversary crafting sees), then zero_grad / backward /
    step, through ``scaler`` (fp16's loss scaling: a step whose gradients overflowed is skipped and the
    scale lowered) when given. No host sync. ``bench profile`` times exactly this."""
    with autocast(x.device, precision):
        out = fn(model, to_layout(x, channels_last), y, params, ctx if ctx.precision == precision else replace(ctx, precision=precision))
    optimizer.zero_grad(set_to_none=True)
    with tf32_scope(x.device, precision):  # TF32 reads a global flag at each kernel: the backward too
        if scaler is None:
            out.loss.backward()
            optimizer.step()
        else:
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
    if out.after_step is not None:
        out.after_step()
    return out


def train_model(
    job: TrainJob,
    suite: Suite,
    splits: DatasetSplits,
    data: TrainData,
    device: torch.device,
    progress: Progress,
    state_dir: Path | None = None,
    start: Callable[[], SharedState | None] | None = None,
    stop_after: int | None = None,
    precision: str | None = None,
) -> TrainResult:
    """Train ``job``'s defence; record the raw weights and every weight average of the run.

    With ``state_dir``, the training state is saved there after every epoch and a saved state is
    resumed from; else the run continues from ``start()``'s state when it gives one (a shared start).
    ``stop_after``: stop after that many epochs, with the state saved but nothing selected (a
    ``prefix`` task). ``precision``: the path ``train.precision`` resolves to on this device (resolved
    here when not given); a resumed or continued run keeps the path its saved state ran.
    """
    spec = suite.train
    entry = DEFENCES.get(job.defence.name)
    seed_everything(job.seed)
    info = splits.info
    model = build(suite.model.name, suite.model.params, info.num_classes, info.shape, info.mean, info.std).to(device)
    prepare(model, spec.channels_last, spec.compile)
    optimizer = make_optimizer(model, spec.optimizer)
    g = torch.Generator().manual_seed(job.seed)
    milestones = spec.schedule.milestones
    avgs = [Averager(w, model, milestones, spec.epochs, job.seed) for w in job.averagers]
    folded = FoldedView.create(model) if spec.fuse_bn else None
    avg_folded = {a.spec: FoldedView.create(a.model) if spec.fuse_bn else None for a in avgs}
    result = TrainResult(Selection(), {a.spec: Selection() for a in avgs})
    select_on_robust = entry.caps.get("selection", "robust") == "robust"
    metric = "val_robust" if select_on_robust else "val_clean"
    need_val = spec.selection == "best_val"
    aug = spec.augmentation
    n_batches = math.ceil(len(data.train_y) / spec.batch_size)
    saver = TrainState(state_dir, job.key)
    first, step = 0, 0
    saved = saver.load(device)
    shared = None if saved is not None or start is None else start()
    from_state = saved if saved is not None else shared.state if shared is not None else {}
    path = from_state.get("precision") or precision or resolve(spec.precision, device)
    result.precision = path
    scaler = torch.amp.GradScaler(device.type) if path == "fp16" else None
    if saved is not None:
        first, step = saver.restore(saved, model, optimizer, g, avgs, result, scaler)
        result.resumed_from = first
        progress.log(f"  {job.display} seed={job.seed}: resuming after epoch {first}/{spec.epochs}")
    elif shared is not None:
        first, step = saver.restore(shared.state, model, optimizer, g, avgs, result, scaler)
        result.log = [shared.record(r) for r in result.log]
        result.started_from = {"prefix": shared.key, "epochs": first}
        progress.log(f"  {job.display} seed={job.seed}: continuing after the {first} epochs it shares ({shared.key[:12]})")
    began = time.perf_counter() - result.seconds
    last = spec.epochs if stop_after is None else stop_after
    for epoch in range(first, last):
        t0 = time.perf_counter()
        lr = spec.schedule.lr(spec.optimizer.lr, epoch, spec.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        stream = batches(
            data.train_x, data.train_y, spec.batch_size, shuffle=True, g=g, crop_padding=aug.crop_padding, flip=aug.flip
        )
        desc = f"train {job.display} seed={job.seed} epoch {epoch + 1}/{spec.epochs}"
        for i, (x, y) in enumerate(progress.bar(stream, n_batches, desc)):
            fault_point(f"train-batch:{epoch + 1}:{i}")
            ctx = TrainContext(epoch, step, spec.epochs, milestones, suite.threat, info.num_classes, folded, path)
            out = train_step(model, optimizer, entry.fn, x, y, job.defence.params, ctx, path, spec.channels_last, scaler)
            for a in avgs:
                a.after_step(model, epoch)
            step += 1
            for k, v in {"loss": out.loss.detach(), **out.logs}.items():
                sums[k] = sums.get(k, 0) + v.detach().float() * len(y)
            seen += len(y)
        record: dict = {"epoch": epoch, "lr": lr}
        record.update({f"train_{k}": float(v) / seen for k, v in sums.items()})  # one sync per epoch
        if not math.isfinite(record["train_loss"]):
            raise TrainingError(f"training {job.display} (seed {job.seed}) diverged: loss is {record['train_loss']} at epoch {epoch + 1}")
        evaluated = _evaluated(model, folded)  # (re-folded once: the weights do not change until the next epoch)
        record["logit_gap"] = logit_gap(evaluated, suite, data, precision=path)
        if need_val:
            best_robust = max((r.get("val_robust", 0.0) for r in result.log), default=0.0)
            record.update(validate(evaluated, suite, data, robust=select_on_robust, precision=path))
            result.raw.offer(model, epoch, record[metric])
            health_check(result.health, record, epoch, spec.epochs, info.num_classes, best_robust)
        for a in avgs:
            if not a.after_epoch(model, epoch):
                continue
            if a.spec.bn_recompute:
                with autocast(device, path):
                    a.recompute_bn(data.train_x, data.train_y, spec.batch_size, aug.crop_padding, aug.flip)
            if need_val:
                scores = validate(_evaluated(a.model, avg_folded[a.spec]), suite, data, robust=select_on_robust, precision=path)
                record.update({f"{a.spec.kind}_{k}": v for k, v in scores.items()})
                result.averaged[a.spec].offer(a.model, epoch, scores[metric])
        record["seconds"] = round(time.perf_counter() - t0, 3)
        result.log.append(record)
        result.seconds = time.perf_counter() - began
        saver.save(epoch, step, model, optimizer, g, avgs, result, path, scaler)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if "_" in k)
        progress.log(f"  {desc}: {shown} ({record['seconds']:.1f}s)")
        progress.epoch_done(job, epoch + 1, last, record["seconds"])
    result.seconds = time.perf_counter() - began
    if stop_after is not None:
        return result
    result.raw.finish(model)
    for a in avgs:
        result.averaged[a.spec].finish(a.model)
    return result
