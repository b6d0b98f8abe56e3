"""C&W-inf as used in robustness tables ("CW-30", methods.md section 4.3).

PGD on the CW margin loss ``-(z_y - max_{j != y} z_j)`` on logits, with no kappa clamp (the margin
is unbounded): the loop of FR ``attack/cw.py`` (Carlini & Wagner's loss, arXiv 1608.04644, in a
Madry-style PGD loop; not C&W's optimisation-based attack). eps 8/255, step alpha = eps/4
(2/255 at 8/255), 30 steps, uniform random start, 1 restart.

Labels: ``CW-30`` under L-inf, as the tables call it; under L2 ``CW-loss PGD-L2-30``, as
Carlini-Wagner's L2 attack is a different (minimum-norm, optimisation-based) method.

Deviations: FR averages the loss over the batch; we sum it, which has the same gradient sign. With
``restarts > 1`` the per-sample worst restart is kept; ``eot: N`` averages each step's gradient over
N passes (see :mod:`bench.attacks.pgd`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.attacks.pgd import eot_label, margin_loss, margin_pgd_label, pgd, pgd_cost, step_size
from bench.core.params import added_param, range_problem
from bench.registry import ATTACKS
from bench.types import ThreatModel


@dataclass(frozen=True)
class CWParams:
    steps: int = 30
    alpha: float | None = None  # step size in pixel space; None = eps/4 (2/255 at eps 8/255)
    restarts: int = 1
    eot: int = added_param(1)  # forward-backward passes averaged per step (expectation over transformation)

    def validate(self):
        return range_problem(self, min1=("steps", "restarts", "eot"), positive=("alpha",))


@ATTACKS.register(
    "cw", params=CWParams, version=1, family="iterative", label=lambda p, norm: eot_label(margin_pgd_label(p.steps, norm), p),
    eot=lambda p: p.eot, cost=pgd_cost,
)
def cw_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: CWParams) -> torch.Tensor:
    """CW-k: PGD on the CW margin loss (no kappa clamp), uniform random start; FR ``attack/cw.py``."""
    eps = threat.eps_float
    return pgd(model, x, y, eps, step_size(p.alpha, eps), p.steps, margin_loss, "uniform", p.restarts, threat.norm, p.eot)
