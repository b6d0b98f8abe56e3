"""MART (Wang et al., ICLR 2020): boosted CE on adversarial examples plus a KL term weighted by how
badly the clean example is classified.

Paper: "Improving Adversarial Robustness Requires Revisiting Misclassified Examples", OpenReview
rklOg6EFwS (no arXiv version).

Provenance: methods.md section 3.7; GitHub ``YisenWang/MART`` ``mart.py::mart_loss`` (HEAD
``2d83e17b``), ``train_wideresnet.py``, ``train_resnet.py``. Confirmed in the code:

* Inner max: K sign steps on **CE** (not KL) from x + 0.001 N(0, I) (``init="normal"``, no clamp at
  init), projection onto the eps-ball and [0,1]; BatchNorm in **eval** mode while crafting.
* Outer loss, forwards in the caller's (train) mode, f(x) before f(x_adv), nothing detached; with
  p = softmax f(x), p' = softmax f(x') and y' = the most probable class other than y under p':
  CE(f(x'), y) + mean_i -log(1.0001 - p'_{i,y'_i} + 1e-12)
  + beta * mean_i [ sum_c p_ic (log p_ic - log(p'_ic + 1e-12)) ] * (1.0000001 - p_{i,y_i}).
* eps from the suite in [0,1] pixel space; alpha None = eps/4 (2/255 at 8/255).

Known deviations: the reference picks y' with ``argsort`` (unstable under exact ties); we mask y and
take the argmax, which agrees except on exact ties. The reference calls ``optimizer.zero_grad()`` and
switches modes itself; we do neither. ``init="uniform"`` (clamped U(-eps, eps), the FR/PGD-AT start)
is offered as a non-reference variant.

Official recipes: WRN-34-10 (``train_wideresnet.py``): eps 0.031, alpha 0.007, 10 steps, beta 6,
lr 0.1, weight decay 7e-4, 90 epochs; ResNet-18 (``train_resnet.py``): beta 5, lr 0.01, wd 3.5e-3,
120 epochs; both LR x0.1 at 75, x0.01 at 90, x0.001 at 100. :data:`OFFICIAL` holds the defence-side
part of the WRN recipe; eps, weight decay and the schedule belong to the suite.
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
class MARTParams:
    steps: int = 10
    alpha: float | None = None  # None = eps/4
    beta: float = 6.0
    init: Literal["normal", "uniform"] = "normal"  # normal = x + 0.001 N(0, I), as mart.py
    attack_bn: Literal["eval", "train"] = "eval"

    def validate(self):
        return range_problem(self, min1=("steps",), positive=("alpha",), nonneg=("beta",))


OFFICIAL = MARTParams(alpha=0.007, beta=6.0)  # WRN-34-10 recipe, with eps 0.031 in the suite


@DEFENCES.register("mart", params=MARTParams, version=1, selection="robust", presets={"official": OFFICIAL}, train_cost=at_cost(6))
def mart(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: MARTParams, ctx: TrainContext) -> LossOut:
    """MART: boosted CE on CE-PGD examples + beta * KL(p_nat || p_adv) weighted by 1 - p_nat[y]."""
    x_adv = pgd_adversary(model, x, y, ctx, steps=p.steps, alpha=p.alpha, attack_bn=p.attack_bn, init=p.init)
    logits = model(x)
    logits_adv = model(x_adv)
    probs_adv = F.softmax(logits_adv, 1)
    other = probs_adv.masked_fill(F.one_hot(y, probs_adv.shape[1]).bool(), float("-inf")).argmax(1)
    boosted = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - probs_adv + 1e-12), other)
    probs = F.softmax(logits, 1)
    kl = F.kl_div(torch.log(probs_adv + 1e-12), probs, reduction="none").sum(1)
    robust = (kl * (1.0000001 - probs.gather(1, y[:, None]).squeeze(1))).mean()
    return LossOut(
        boosted + p.beta * robust,
        {"kl": robust.detach(), "adv_acc": (logits_adv.argmax(1) == y).float().mean().detach()},
    )
