"""PGD family (methods.md section 4): one core, parameterised into FGSM and PGD-k, L-inf, L2 or L1 (bench/attacks/l1.py).

* ``pgd``: PGD-k on cross-entropy, uniform random start, sign steps, projection onto the eps-ball
  and [0,1] (Madry et al. 2018; FR ``attack/pgd.py``). With ``restarts > 1`` the per-sample worst
  restart is kept (a misclassifying restart beats any other; ties broken by higher loss), unlike
  FR's ``pgd_whitebox``, which returns the last restart.
* ``fgsm``: one step of size eps from the clean input, no random start (Goodfellow et al. 2015).

The threat model's norm picks the geometry. L2 (Madry et al. 2018; Rice et al. 2020
``locuslab/robust_overfitting`` ``train_cifar.py`` for the start): steps along the per-sample
L2-normalised gradient, projection by rescaling delta onto the L2 ball, then clipping to [0,1]
(which only shrinks delta); the uniform start draws a Gaussian direction scaled to radius
eps * U(0, 1), as the reference does; FGSM becomes the fast gradient method (one step of length eps).
L1 (``bench/attacks/l1.py``: SLIDE's sparse steps, Tramèr & Boneh 2019): steps of L1 length alpha
along the sign of the top 1% of movable gradient coordinates, then the exact projection onto the
L1 ball intersected with [0,1]; FGSM is one such step of length eps. Linf and L2 are unchanged by it.

Gradients are taken with respect to the input only (``torch.autograd.grad(loss, x)``), so no
parameter gradients are computed or accumulated.

``eot: N`` (expectation over transformation, Athalye et al. 2018, arXiv 1802.00420) averages the
input gradient over N forward-backward passes per step: against a randomised model (noise or a random
transform at test time) one pass gives the gradient of one draw, a noisy estimate that makes the
attack look weaker than it is. ``eot: 1`` (the default) is one pass, bit for bit the attack without
the parameter, and is left out of the cache keys (``bench.core.params.added_param``), so keys made before
it existed stay valid. The restart selection and the evaluator's final decision are not averaged
here (the evaluator takes its own majority over draws: ``bench/evaluation/randomised.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.attacks import l1
from bench.core.params import added_param, range_problem
from bench.registry import ATTACKS
from bench.types import ThreatModel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> per-sample loss


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CW margin on logits, -(z_y - max_{j != y} z_j), no kappa clamp (FR ``attack/cw.py``)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": margin_loss}


Norm = Literal["Linf", "L2", "L1"]


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def l2_norms(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


def project(x: torch.Tensor, x0: torch.Tensor, eps: float, norm: Norm = "Linf") -> torch.Tensor:
    """Project onto the eps-ball around x0 (L-inf: clip; L2: rescale), then clip to [0,1]; L1: the exact
    Euclidean projection onto the ball intersected with [0,1] (``l1.project_l1_box``)."""
    if norm == "L1":
        return l1.project_l1_box(x, x0, eps)
    if norm == "L2":
        delta = x - x0
        factor = (eps / l2_norms(delta).clamp_min(1e-12)).clamp(max=1.0)
        return (x0 + delta * _per_sample(factor, delta)).clamp_(0.0, 1.0)
    return torch.min(torch.max(x, x0 - eps), x0 + eps).clamp_(0.0, 1.0)


def direction(grad: torch.Tensor, norm: Norm = "Linf", x: torch.Tensor | None = None) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign (L-inf), the L2-normalised gradient, or (L1, at
    the point ``x``) the sparse sign step over the top 1% of movable coordinates."""
    if norm == "L1":
        return l1.sparse_direction(grad, x)
    if norm == "L2":
        return grad / _per_sample(l2_norms(grad).clamp_min(1e-12), grad)
    return grad.sign()


def random_init(x0: torch.Tensor, eps: float, init: str, norm: Norm = "Linf") -> torch.Tensor:
    if init == "uniform" and norm == "L1":
        return l1.random_start(x0, eps)
    if init == "uniform" and norm == "L2":  # Rice et al.: Gaussian direction, radius eps * U(0, 1)
        delta = torch.randn_like(x0)
        radius = torch.rand(len(x0), device=x0.device, dtype=x0.dtype) * eps
        return (x0 + delta * _per_sample(radius / l2_norms(delta).clamp_min(1e-12), delta)).clamp_(0.0, 1.0)
    if init == "uniform":
        return (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp_(0.0, 1.0)
    if init == "normal":  # TRADES: x + 0.001 N(0, I), no clamp at init
        return x0 + 0.001 * torch.randn_like(x0)
    if init == "none":
        return x0.clone()
    raise ValueError(f"unknown init {init!r}")


def pgd(
    model: nn.Module,
    x0: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    loss: LossFn = ce_loss,
    init: str = "uniform",
    restarts: int = 1,
    norm: Norm = "Linf",
    eot: int = 1,
) -> torch.Tensor:
    """Steepest ascent on ``loss`` inside the eps-ball of ``norm``, the gradient averaged over ``eot``
    passes per step; see the module docstring."""
    x0 = x0.detach()
    best = x0.clone()
    best_fooled = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    best_loss = torch.full((len(x0),), float("-inf"), device=x0.device)
    for _ in range(restarts):
        x = random_init(x0, eps, init, norm)
        for _ in range(steps):
            grad = eot_gradient(model, x, y, loss, eot)
            x = project(x.detach() + alpha * direction(grad, norm, x), x0, eps, norm)
        if restarts == 1:
            return x.detach()
        with torch.no_grad():
            logits = model(x)
            fooled = logits.argmax(1) != y
            value = loss(logits, y)
        better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (value > best_loss))
        best[better] = x[better]
        best_fooled = torch.where(better, fooled, best_fooled)
        best_loss = torch.where(better, value, best_loss)
    return best


def eot_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFn, eot: int = 1) -> torch.Tensor:
    """The input gradient of the summed ``loss``, averaged over ``eot`` forward-backward passes (one: exactly one pass)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(model(x), y).sum(), x)
    for _ in range(eot - 1):
        grad = grad + torch.autograd.grad(loss(model(x), y).sum(), x)[0]
    return grad / eot if eot > 1 else grad


def eot_label(text: str, p: object) -> str:
    """A gradient attack's column label with its EoT passes spelled out when there are several (``PGD-20·EoT10``)."""
    eot = getattr(p, "eot", 1)
    return f"{text}·EoT{eot}" if eot > 1 else text


@dataclass(frozen=True)
class PGDParams:
    steps: int = 20
    alpha: float | None = None  # step size in pixel space; None = eps/4 (2/255 at eps 8/255)
    restarts: int = 1
    init: Literal["uniform", "normal", "none"] = "uniform"
    loss: Literal["ce", "cw"] = "ce"
    eot: int = added_param(1)  # forward-backward passes averaged per step (expectation over transformation)

    def validate(self):
        return range_problem(self, min1=("steps", "restarts", "eot"), positive=("alpha",))


def step_size(alpha: float | None, eps: float) -> float:
    return eps / 4 if alpha is None else alpha


def margin_pgd_label(steps: int, norm: str) -> str:
    """``CW-<steps>`` under L-inf (the tables' name for margin-loss PGD); ``CW-loss PGD-<norm>-<steps>``
    otherwise: Carlini-Wagner's own L2 attack is a different (minimum-norm) method."""
    return f"CW-{steps}" if norm == "Linf" else f"CW-loss PGD-{norm}-{steps}"


def pgd_label(p: PGDParams, norm: str) -> str:
    """``PGD-<steps>``; under L2 with ``loss: cw`` the margin loss is named (L-inf labels stay as they were)."""
    return margin_pgd_label(p.steps, norm) if p.loss == "cw" and norm != "Linf" else f"PGD-{p.steps}"


def pgd_cost(p: PGDParams | Any) -> float:
    """Forward-equivalents per attacked image of PGD-k and CW-k (``bench/plan/cost.py``): the clean check, 2 per
    step per restart, the final decision, and one selection forward per restart when there are several."""
    restarts = p.restarts
    return 2 + restarts * 2 * p.steps + (restarts if restarts > 1 else 0)


@ATTACKS.register(
    "pgd", params=PGDParams, version=1, family="iterative", label=lambda p, norm: eot_label(pgd_label(p, norm), p), eot=lambda p: p.eot,
    cost=pgd_cost,
)
def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: PGDParams) -> torch.Tensor:
    """PGD-k (L-inf, L2 or L1: the threat's norm), uniform random start, CE loss; restarts keep the per-sample worst."""
    eps = threat.eps_float
    return pgd(model, x, y, eps, step_size(p.alpha, eps), p.steps, LOSSES[p.loss], p.init, p.restarts, threat.norm, p.eot)


@dataclass(frozen=True)
class FGSMParams:
    eot: int = added_param(1)  # forward-backward passes averaged for the one step (expectation over transformation)

    def validate(self):
        return range_problem(self, min1=("eot",))


@ATTACKS.register("fgsm", params=FGSMParams, version=1, family="fgsm", label=lambda p: eot_label("FGSM", p), eot=lambda p: p.eot, cost=lambda p: 4)
def fgsm_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: FGSMParams) -> torch.Tensor:
    """FGSM: one signed-gradient step of size eps on CE, no random start (L2: the normalised gradient)."""
    eps = threat.eps_float
    return pgd(model, x, y, eps, eps, 1, ce_loss, "none", 1, threat.norm, p.eot)


@dataclass(frozen=True)
class NoAttackParams:
    pass


@ATTACKS.register("none", params=NoAttackParams, version=1, family="none", label=lambda p: "Clean", cost=lambda p: 1)
def no_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: NoAttackParams) -> torch.Tensor:
    """No attack: the clean input (clean accuracy only)."""
    return x.clone()
