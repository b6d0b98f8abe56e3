"""The PGD adversary shared by the defences (crafted in the BatchNorm mode they ask for), and their cost in forward-equivalents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.attacks.pgd import LossFn, ce_loss, pgd, step_size
from bench.core.modes import BNMode, bn_mode
from bench.types import TrainContext


def at_cost(extra: float) -> Callable[[Any], float]:
    """A defence's ``train_cost``: a PGD crafting of ``params.steps`` steps at 2 forward-equivalents each, plus
    ``extra`` for the rest of the step (3: one forward and backward; TRADES 7: its KL terms; MART, FR, SAR, AWP 6)."""
    return lambda p: 2 * p.steps + extra


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
    """Craft training adversarial examples in the suite's threat model (eps and norm), in the given BN mode
    (in eval mode with ``train.fuse_bn``: against the model's BN-folded view; under fp16 through the
    input-gradient scaling view: ``TrainContext.attack_target``)."""
    eps = ctx.threat.eps_float
    with bn_mode(model, attack_bn):
        target = ctx.attack_target(model, attack_bn)
        return pgd(target, x, y, eps, step_size(alpha, eps), steps, loss, init, norm=ctx.threat.norm)
