"""Evaluation: per-sample clean and robust flags for one (weights, attack) pair.

The model runs in eval mode with its parameters frozen (input-only gradients). Only points that
are classified correctly on clean inputs are attacked (the others count as non-robust). Every
returned batch is checked to lie in the eps-ball and in [0,1], and the model's mode must be
unchanged afterwards; predictions on ``x_adv`` are recomputed here in fp32.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.attacks import check_adversarial
from bench.data.loader import to_unit
from bench.errors import EvaluationError
from bench.progress import Progress

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter; both restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


@dataclass
class Flags:
    clean: np.ndarray  # bool per sample
    robust: np.ndarray  # bool per sample (False where clean is False)
    max_dist: float
    seconds: float

    @property
    def clean_acc(self) -> float:
        return float(self.clean.mean()) if len(self.clean) else float("nan")

    @property
    def robust_acc(self) -> float:
        return float(self.robust.mean()) if len(self.robust) else float("nan")


def robust_flags(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: AttackFn,
    eps: float,
    batch_size: int,
    name: str,
    progress: Progress | None = None,
    norm: str = "Linf",
) -> Flags:
    """Clean and robust flags of ``model`` on uint8 inputs ``x`` under ``attack`` (checked in the ``norm`` ball)."""
    start = time.perf_counter()
    clean_parts, robust_parts = [], []
    max_dist = 0.0
    starts = range(0, len(x), batch_size)
    it = progress.bar(starts, len(starts), f"eval {name}") if progress else starts
    with frozen_eval(model):
        for i in it:
            xb, yb = to_unit(x[i : i + batch_size]), y[i : i + batch_size]
            with torch.no_grad():
                clean = model(xb).argmax(1) == yb
            robust = clean.clone()
            if clean.any():
                xs, ys = xb[clean], yb[clean]
                x_adv = attack(model, xs, ys)
                if model.training or any(m.training for m in model.modules()):
                    raise EvaluationError(f"attack {name!r} changed the model's mode (it must stay in eval mode)")
                max_dist = max(max_dist, check_adversarial(name, xs, x_adv, eps, norm=norm))
                with torch.no_grad():
                    robust[clean] = model(x_adv.float()).argmax(1) == ys
            clean_parts.append(clean.cpu())
            robust_parts.append(robust.cpu())
    cat = lambda parts: torch.cat(parts).numpy() if parts else np.zeros(0, dtype=bool)  # noqa: E731
    return Flags(cat(clean_parts), cat(robust_parts), max_dist, time.perf_counter() - start)


def subset_indices(n_total: int, n_examples: int | None, seed: int) -> np.ndarray:
    """Test examples used: all, or a seeded random subset (sorted ids into the test set)."""
    if n_examples is None or n_examples >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.RandomState(seed).permutation(n_total)[:n_examples])
