"""PGD-AT (Madry et al. 2018, arXiv 1706.06083), the FR repository's baseline recipe.

Provenance: methods.md section 3.2, "FR repo" column (GitHub ``Harr7y/FR-Frequency_Regularization``
``train.py``, ``attack/pgd.py``): PGD-10, step eps/4 (2/255 at eps = 8/255), uniform random start
clamped to [0,1], mean CE, one restart, BatchNorm in **eval** mode while crafting (``model.eval()``
inside ``pgd_whitebox``), then CE on the adversarial batch in train mode. eps is the suite's threat
model (pixel space); the defence carries no eps of its own.
Known deviations: none for the loss. Madry/Rice keep BN in train mode while crafting
(``attack_bn: train`` reproduces them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.params import range_problem
from bench.registry import DEFENCES
from bench.types import LossOut, TrainContext
from defenses._common import at_cost, pgd_adversary


@dataclass(frozen=True)
class PGDATParams:
    steps: int = 10
    alpha: float | None = None  # None = eps/4
    attack_bn: Literal["eval", "train"] = "eval"

    def validate(self):
        return range_problem(self, min1=("steps",), positive=("alpha",))


@DEFENCES.register("pgd_at", params=PGDATParams, version=1, selection="robust", train_cost=at_cost(3))
def pgd_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: PGDATParams, ctx: TrainContext) -> LossOut:
    """PGD-AT: CE on PGD-10 adversarial examples (uniform start, BN eval while crafting)."""
    x_adv = pgd_adversary(model, x, y, ctx, steps=p.steps, alpha=p.alpha, attack_bn=p.attack_bn)
    logits = model(x_adv)
    loss = F.cross_entropy(logits, y)
    return LossOut(loss, {"adv_acc": (logits.argmax(1) == y).float().mean().detach()})
