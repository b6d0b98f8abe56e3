"""THE training loop: the only place that owns the optimiser, the schedule and checkpoint selection.

Per epoch: set the LR from the schedule; for each batch call the defence's pure loss
``fn(model, x, y, params, ctx)``, then zero_grad / backward / step; check the loss is finite;
evaluate the validation split (clean, and PGD when the selection needs it); keep the ``last`` and
``best_val`` weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from bench.analysis.fourier import frequency_regularizer
from bench.attacks.pgd import pgd, step_size
from bench.averaging import Averager
from bench.config import OptimizerSpec, Suite, WASpec
from bench.data.loader import batches, split_indices
from bench.env import seed_everything
from bench.errors import BenchError
from bench.evaluate import frozen_eval, robust_flags
from bench.models import build
from bench.plan import TrainJob
from bench.progress import Progress
from bench.registry import DEFENCES
from bench.types import DatasetSplits, TrainContext


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


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def validate(model: nn.Module, suite: Suite, data: TrainData, robust: bool) -> dict[str, float]:
    """Clean (and PGD, when ``robust``) accuracy on the validation split."""
    if len(data.val_y) == 0:
        return {}
    eps = suite.threat.eps_float
    va = suite.train.val_attack
    if robust:
        attack = partial(pgd, eps=eps, alpha=step_size(va.alpha, eps), steps=va.steps, norm=suite.threat.norm)
    else:
        attack = lambda m, x, y: x  # noqa: E731
    flags = robust_flags(model, data.val_x, data.val_y, attack, eps, 512, "val", norm=suite.threat.norm)
    out = {"val_clean": flags.clean_acc}
    if robust:
        out["val_robust"] = flags.robust_acc
    return out


def logit_gap(model: nn.Module, suite: Suite, data: TrainData, n: int = 128) -> float:
    """FR's spectral logit gap (batch2d DFT, methods.md 6.4) on a fixed batch, logged every epoch.

    The quantity FR/SAR minimise, measured for every defence: val examples (train ones without a
    val split), PGD at the val-attack settings, eval mode; the RNG is forked so logging never
    changes the training trajectory.
    """
    x_u8, y = (data.val_x, data.val_y) if len(data.val_y) else (data.train_x, data.train_y)
    x, y = x_u8[:n].float() / 255, y[:n]
    eps = suite.threat.eps_float
    va = suite.train.val_attack
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), frozen_eval(model):
        x_adv = pgd(model, x, y, eps, step_size(va.alpha, eps), va.steps, norm=suite.threat.norm)
        with torch.no_grad():
            return float(frequency_regularizer(model(x_adv), model(x)))


def train_model(
    job: TrainJob,
    suite: Suite,
    splits: DatasetSplits,
    data: TrainData,
    device: torch.device,
    progress: Progress,
    averagers: tuple[WASpec, ...] = (),
) -> TrainResult:
    """Train ``job``'s defence; record the raw weights and every requested weight average."""
    spec = suite.train
    entry = DEFENCES.get(job.defence.name)
    seed_everything(job.seed)
    info = splits.info
    model = build(suite.model.name, suite.model.params, info.num_classes, info.shape, info.mean, info.std).to(device)
    optimizer = make_optimizer(model, spec.optimizer)
    g = torch.Generator().manual_seed(job.seed)
    milestones = spec.schedule.milestones
    avgs = [Averager(w, model, milestones, spec.epochs, job.seed) for w in averagers]
    result = TrainResult(Selection(), {a.spec: Selection() for a in avgs})
    select_on_robust = entry.caps.get("selection", "robust") == "robust"
    metric = "val_robust" if select_on_robust else "val_clean"
    need_val = spec.selection == "best_val"
    aug = spec.augmentation
    step = 0
    n_batches = math.ceil(len(data.train_y) / spec.batch_size)
    start = time.perf_counter()
    for epoch in range(spec.epochs):
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
        for x, y in progress.bar(stream, n_batches, desc):
            ctx = TrainContext(epoch, step, spec.epochs, milestones, suite.threat, info.num_classes)
            out = entry.fn(model, x, y, job.defence.params, ctx)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            if out.after_step is not None:
                out.after_step()
            for a in avgs:
                a.after_step(model, epoch)
            step += 1
            for k, v in {"loss": out.loss.detach(), **out.logs}.items():
                sums[k] = sums.get(k, 0) + v.detach().float() * len(y)
            seen += len(y)
        record: dict = {"epoch": epoch, "lr": lr}
        record.update({f"train_{k}": float(v) / seen for k, v in sums.items()})  # one sync per epoch
        if not math.isfinite(record["train_loss"]):
            raise TrainingError(f"training {job.display} (seed {job.seed}) diverged: loss is {record['train_loss']} at epoch {epoch}")
        record["logit_gap"] = logit_gap(model, suite, data)
        if need_val:
            record.update(validate(model, suite, data, robust=select_on_robust))
            result.raw.offer(model, epoch, record[metric])
        for a in avgs:
            if not a.after_epoch(model, epoch):
                continue
            if a.spec.bn_recompute:
                a.recompute_bn(data.train_x, data.train_y, spec.batch_size, aug.crop_padding, aug.flip)
            if need_val:
                scores = validate(a.model, suite, data, robust=select_on_robust)
                record.update({f"{a.spec.kind}_{k}": v for k, v in scores.items()})
                result.averaged[a.spec].offer(a.model, epoch, scores[metric])
        record["seconds"] = round(time.perf_counter() - t0, 3)
        result.log.append(record)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if "_" in k)
        progress.log(f"  {desc}: {shown} ({record['seconds']:.1f}s)")
    result.raw.finish(model)
    for a in avgs:
        result.averaged[a.spec].finish(a.model)
    result.seconds = time.perf_counter() - start
    return result
