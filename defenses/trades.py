"""TRADES (Zhang et al. 2019, arXiv 1901.08573): clean CE plus a KL robustness term.

Provenance: methods.md section 3.3; GitHub ``yaodongyu/TRADES`` ``trades.py::trades_loss`` (HEAD,
the version with ``model.eval()`` / ``model.train()``) and ``train_trades_cifar10.py``.

* Inner max: K sign steps on the batch-summed KL(p_nat || p_adv) (``KLDivLoss(size_average=False)``),
  from x + 0.001 N(0, I) (no clamp at init), projection onto the eps-ball and [0,1]. BatchNorm in
  **eval** mode while crafting (HEAD ``model.eval()``; ``attack_bn: train`` gives the older,
  mode-less ``trades.py``).
* Outer loss: CE(f(x), y) + beta * KL_sum(softmax f(x) || softmax f(x_adv)) / B, nothing detached,
  forwards in the caller's mode (train mode in ``bench/training/train.py``, as HEAD's ``model.train()``).
* eps is the suite's threat model in [0,1] pixel space (``ctx.threat.eps_float``); alpha None =
  eps/4 (2/255 at 8/255). The defence carries no eps and no schedule.

Known deviations (ours, confirmed against the reference code):

* p_nat for the inner max is computed once, without grad, in ``attack_bn`` mode; the reference
  recomputes ``model(x_natural)`` at every step. In eval mode the value is identical; with
  ``attack_bn: train`` the reference also updates the BN running statistics with the clean batch at
  every step, which we do not.
* The reference's outer loss runs three train-mode forwards (x, x_adv, x again for the KL target);
  we reuse the first clean logits. Loss and gradients are identical (train-mode BN gives the same
  logits twice); only one extra running-statistics update with the clean batch is skipped.
* The reference calls ``optimizer.zero_grad()`` and forces ``model.train()``; we do neither.

Official recipe (``train_trades_cifar10.py``): eps 0.031, alpha 0.007, 10 steps, beta 6, SGD lr 0.1,
momentum 0.9, weight decay 2e-4, batch 128, 76 epochs with LR x0.1 at epoch 75. :data:`OFFICIAL`
holds the defence-side part (alpha; the rest are defaults); eps, weight decay and the schedule belong
to the suite (``threat.eps: 0.031``, ``train.optimizer.weight_decay: 2e-4``, 76 epochs). The harness
default instead uses eps 8/255, alpha eps/4 and the PGD-AT schedule, for like-for-like comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.modes import bn_mode
from bench.core.params import range_problem
from bench.registry import DEFENCES
from bench.types import LossOut, TrainContext
from defenses._common import at_cost, pgd_adversary


@dataclass(frozen=True)
class TRADESParams:
    steps: int = 10
    alpha: float | None = None  # None = eps/4
    beta: float = 6.0
    attack_bn: Literal["eval", "train"] = "eval"

    def validate(self):
        return range_problem(self, min1=("steps",), positive=("alpha",), nonneg=("beta",))


OFFICIAL = TRADESParams(alpha=0.007, beta=6.0, steps=10, attack_bn="eval")  # with eps 0.031 in the suite


def kl_to(p_nat: torch.Tensor):
    """Per-sample KL(p_nat || softmax(logits)) summed over classes: the TRADES inner objective."""
    return lambda logits, _y: F.kl_div(F.log_softmax(logits, 1), p_nat, reduction="none").sum(1)


@DEFENCES.register("trades", params=TRADESParams, version=1, selection="robust", presets={"official": OFFICIAL}, train_cost=at_cost(7))
def trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: TRADESParams, ctx: TrainContext) -> LossOut:
    """TRADES: CE(f(x), y) + beta * KL(p_nat || p_adv), KL-PGD inner max from x + 0.001 N(0, I)."""
    with bn_mode(model, p.attack_bn), torch.no_grad():
        p_nat = F.softmax(model(x), 1)
    x_adv = pgd_adversary(
        model, x, y, ctx, steps=p.steps, alpha=p.alpha, attack_bn=p.attack_bn, loss=kl_to(p_nat), init="normal"
    )
    logits = model(x)
    logits_adv = model(x_adv)
    natural = F.cross_entropy(logits, y)
    robust = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="sum") / len(x)
    return LossOut(
        natural + p.beta * robust,
        {
            "ce": natural.detach(),
            "kl": robust.detach(),
            "acc": (logits.argmax(1) == y).float().mean().detach(),
            "adv_acc": (logits_adv.argmax(1) == y).float().mean().detach(),
        },
    )
