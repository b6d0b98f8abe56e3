"""FR: frequency regularisation (Huang, Tao, Lin, Wong; arXiv 2212.12732, Eq. 2), code-faithful.

Provenance: methods.md section 3.4; GitHub ``Harr7y/FR-Frequency_Regularization`` at ``9e7ad445``,
``train.py::train_epoch_at_FR`` and ``main.py`` (flags ``--fre_rate 0.1 --fre_start_epoch 75``).

Per batch (confirmed in the code):

1. x_adv = PGD-10, step eps/4, uniform start, CE, BatchNorm in **eval** mode while crafting
   (``model.eval()`` inside ``pgd_whitebox``); eps from the suite (pixel space, 8/255 on CIFAR).
2. Z_adv = f(x_adv); loss = CE(Z_adv, y).
3. Z_nat = f(x): a **second forward in the caller's (train) mode**, so BN uses batch statistics and
   its running statistics are updated twice per step. Nothing is detached.
4. loss += lam * L1(view_as_real(DFT(Z_adv)), view_as_real(DFT(Z_nat))), lam = 0.1. The code's
   ``torch.rfft(Z, signal_ndim=2, onesided=False)`` is a 2-D DFT over **(batch, class)**, which
   mixes samples (``fft="batch2d"``, default). ``fft="per_sample"`` is the 1-D DFT over classes
   that Eq. (2)'s per-sample notation suggests (our reading; not what the code runs).
5. The term is on from epoch ``start_epoch`` (0-indexed): ``"first_milestone"`` (default) means
   ``ctx.first_milestone`` (75 in the CIFAR recipe, the code default); an int (0 allowed, as in the
   paper's ablation figure) is taken literally. Before it, the loss is plain PGD-AT (CE on x_adv),
   with no clean forward.

We take one DFT of Z_adv - Z_nat instead of two (linearity; equal up to rounding) and compute it in
at least float32 (cuFFT half precision supports only power-of-two sizes). The batch2d term grows
like sqrt(B*C/2) times the mean |Z_adv - Z_nat| (methods.md 3.4.3), so it depends on the batch size,
including a short last batch.

Logs: ``fr`` = the unweighted regulariser when active and 0 before ``start_epoch`` (not computed
then: a clean forward in train mode would update BN statistics and change the run, and an eval-mode
value would be a different quantity); ``fr_active`` = 1 or 0 says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.analysis.fourier import frequency_regularizer
from bench.core.params import range_problem
from bench.registry import DEFENCES
from bench.types import LossOut, SharedStart, TrainContext
from defenses._common import at_cost, pgd_adversary
from defenses.pgd_at import PGDATParams


@dataclass(frozen=True)
class FRParams:
    lam: float = 0.1
    fft: Literal["batch2d", "per_sample"] = "batch2d"
    start_epoch: int | Literal["first_milestone"] = "first_milestone"
    steps: int = 10
    alpha: float | None = None  # None = eps/4
    attack_bn: Literal["eval", "train"] = "eval"

    def validate(self):
        if isinstance(self.start_epoch, int) and self.start_epoch < 0:
            return "start_epoch", "must be >= 0 or 'first_milestone'"
        return range_problem(self, min1=("steps",), positive=("alpha",), nonneg=("lam",))


def spectral_at_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: FRParams, ctx: TrainContext, key: str
) -> LossOut:
    """PGD-AT plus ``p.lam`` times the spectral logit gap from ``p.start_epoch``; shared by ``fr`` and ``sar``."""
    x_adv = pgd_adversary(model, x, y, ctx, steps=p.steps, alpha=p.alpha, attack_bn=p.attack_bn)
    logits_adv = model(x_adv)
    loss = F.cross_entropy(logits_adv, y)
    active = ctx.epoch >= start_epoch(p, ctx.first_milestone)
    reg = torch.zeros((), device=loss.device)
    if active:
        reg = frequency_regularizer(logits_adv, model(x), p.fft)
        loss = loss + p.lam * reg
    logs = {
        key: reg.detach(),
        f"{key}_active": torch.tensor(float(active), device=loss.device),
        "adv_acc": (logits_adv.argmax(1) == y).float().mean().detach(),
    }
    return LossOut(loss, logs)


def start_epoch(p: FRParams, first_milestone: int) -> int:
    """The epoch (0-indexed) the spectral term switches on."""
    return first_milestone if p.start_epoch == "first_milestone" else p.start_epoch


def spectral_shared_start(p: FRParams, first_milestone: int, key: str) -> SharedStart | None:
    """Before ``start_epoch`` the loss is PGD-AT's with the same attack (no clean forward, no extra
    draw): those epochs are trained once for both runs (``bench.types.SharedStart``)."""
    start = start_epoch(p, first_milestone)
    if start <= 0:
        return None
    return SharedStart("pgd_at", PGDATParams(p.steps, p.alpha, p.attack_bn), start, {key: 0.0, f"{key}_active": 0.0})


@DEFENCES.register(
    "fr", params=FRParams, version=1, selection="robust", shared_start=lambda p, m: spectral_shared_start(p, m, "fr"),
    train_cost=at_cost(6),
)
def fr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: FRParams, ctx: TrainContext) -> LossOut:
    """FR: CE on PGD-10 examples + 0.1 * L1 of the (batch, class) DFT of f(x_adv) - f(x), from the first LR drop."""
    return spectral_at_loss(model, x, y, p, ctx, "fr")
