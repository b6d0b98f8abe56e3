"""Helpers shared by defences: a restoring BatchNorm-mode context and the PGD adversary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from bench.attacks.pgd import LossFn, ce_loss, pgd, step_size
from bench.types import TrainContext

BNMode = Literal["eval", "train"]


@contextlib.contextmanager
def bn_mode(model: nn.Module, mode: BNMode) -> Iterator[nn.Module]:
    """Run the block with the model in ``mode`` ("eval" or "train"), then restore every module's mode."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        yield model
    finally:
        for m, training in saved:
            m.training = training


def pgd_adversary(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ctx: TrainContext,
    *,
    steps: int,
    alpha: float | None,
    attack_bn: BNMode = "eval",
    loss: LossFn = ce_loss,
    init: str = "uniform",
) -> torch.Tensor:
    """Craft training adversarial examples in the suite's threat model (eps and norm), in the given BN mode."""
    eps = ctx.threat.eps_float
    with bn_mode(model, attack_bn):
        return pgd(model, x, y, eps, step_size(alpha, eps), steps, loss, init, norm=ctx.threat.norm)
