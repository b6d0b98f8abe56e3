"""Standard (natural) training: cross-entropy on clean, augmented inputs.

Provenance: the usual ERM baseline (methods.md section 3.1). The FR code's ``train_epoch`` for
natural training is never called by its ``main.py``, so the recipe behind FR Table 1's "Natural"
row is unconfirmed; the harness uses the suite's common schedule and selects the checkpoint on
clean validation accuracy. No adversarial examples, so no BN-mode or eps questions arise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.registry import DEFENCES
from bench.types import LossOut, TrainContext


@dataclass(frozen=True)
class StandardParams:
    pass


@DEFENCES.register("standard", params=StandardParams, version=1, selection="clean", train_cost=lambda p: 3)
def standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: StandardParams, ctx: TrainContext) -> LossOut:
    """Natural training: CE(f(x), y) on clean inputs."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    return LossOut(loss, {"acc": (logits.argmax(1) == y).float().mean().detach()})
