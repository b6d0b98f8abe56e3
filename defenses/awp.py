"""AT-AWP: adversarial weight perturbation on top of PGD-AT (Wu, Xia, Wang; arXiv 2004.05884).

Provenance: methods.md section 3.8; GitHub ``csdongxian/AWP`` ``AT_AWP/utils_awp.py`` and
``AT_AWP/train_cifar10.py``. Per batch:

1. x_adv = PGD (10 steps, step eps/4 = 2/255 at 8/255, uniform start). The reference crafts
   Rice-style, with BatchNorm in **train** mode (``attack_bn: train`` is the default here; eps is
   the suite's, in pixel space).
2. A proxy copy of the model (train mode) takes one gradient-ascent step on CE(proxy(x_adv), y);
   for every weight with ndim > 1 (conv / linear, not BN or biases) the perturbation is
   v_l = ||w_l|| / (||w'_l - w_l|| + 1e-20) * (w'_l - w_l). One plain-SGD step from a copy moves
   along the gradient, so v_l = ||w_l|| * g_l / ||g_l|| (the proxy's lr cancels).
3. Perturb w <- w + gamma * v (gamma = 0.01 for AT-AWP on CIFAR-10), compute CE(f(x_adv), y) with
   the perturbed weights; the training loop runs backward and the optimiser step;
4. then ``LossOut.after_step`` restores w <- w - gamma * v, as the reference does, and
5. with ``clean_forward: true`` (the default, as the reference) runs the model once more on the
   clean batch in **train** mode without gradients: ``train_cifar10.py`` computes
   ``output = model(normalize(X))`` after ``awp_adversary.restore(awp)`` to log the clean accuracy,
   and in train mode that forward also updates the BatchNorm running statistics with clean-batch
   statistics (every batch, warm-up included). ``clean_forward: false`` leaves them to the
   adversarial forwards only (our version-1 behaviour); it only matters for models with BatchNorm.

Contract note: this is the one defence that changes weights around the step, so it returns an
``after_step`` hook the loop calls after ``optimizer.step()``; it still never touches the
optimiser. Warm-up: ``warmup`` epochs of plain PGD-AT first (0 on CIFAR-10, 5 on SVHN).
Not included: TRADES-AWP (its proxy objective is the TRADES loss).
Observed: with train-mode crafting, AWP (gamma 0.01 and 0.005, no warm-up) collapsed to chance on the
BatchNorm ``small_cnn`` from the first epoch, while eval-mode crafting trained; third-party
reimplementations report AWP sometimes killing ResNet-18 training too. Use ``attack_bn: eval`` or a
warm-up there (the Fashion-MNIST suites use ``attack_bn: eval``), and watch the sanity flags.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.params import range_problem
from bench.device.precision import direction_logits
from bench.registry import DEFENCES
from bench.types import LossOut, TrainContext
from defenses._common import at_cost, bn_mode, pgd_adversary


@dataclass(frozen=True)
class AWPParams:
    steps: int = 10
    alpha: float | None = None  # None = eps/4
    gamma: float = 0.01  # perturbation size relative to each weight tensor's norm
    warmup: int = 0  # epochs of plain PGD-AT before AWP starts
    attack_bn: Literal["eval", "train"] = "train"
    clean_forward: bool = True  # the reference's train-mode clean forward after the restore (BN statistics)

    def validate(self):
        return range_problem(self, min1=("steps",), positive=("alpha",), nonneg=("gamma", "warmup"))


def weight_perturbation(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, gamma: float) -> dict[str, torch.Tensor]:
    """gamma * v for every weight of ndim > 1, from one ascent step of a train-mode proxy copy."""
    proxy = copy.deepcopy(model).train()
    named = [(n, p) for n, p in proxy.named_parameters() if p.ndim > 1 and "weight" in n]
    # under fp16 the logits' gradient is scaled (a power of two) so that the weight gradients do not underflow
    grads = torch.autograd.grad(F.cross_entropy(direction_logits(proxy(x_adv)), y), [p for _, p in named])
    return {n: gamma * p.detach().norm() / (g.norm() + 1e-20) * g for (n, p), g in zip(named, grads)}


@DEFENCES.register("awp", params=AWPParams, version=2, selection="robust", train_cost=at_cost(6))
def awp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: AWPParams, ctx: TrainContext) -> LossOut:
    """AT-AWP: PGD-10 AT with weights perturbed by gamma = 0.01 x the adversarial weight direction."""
    x_adv = pgd_adversary(model, x, y, ctx, steps=p.steps, alpha=p.alpha, attack_bn=p.attack_bn)
    delta = {} if ctx.epoch < p.warmup or p.gamma == 0 else weight_perturbation(model, x_adv, y, p.gamma)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, v in delta.items():
            params[name].add_(v)

    def after_step() -> None:
        with torch.no_grad():
            for name, v in delta.items():
                params[name].sub_(v)
            if p.clean_forward:
                with bn_mode(model, "train"):
                    model(x)

    logits = model(x_adv)
    logs = {"adv_acc": (logits.argmax(1) == y).float().mean().detach()}
    return LossOut(F.cross_entropy(logits, y), logs, after_step=after_step if delta or p.clean_forward else None)
