"""Sanity checks that catch broken evaluations (gradient masking and friends), stored as columns.

Per evaluated weights (one cheap job, cached like evaluations):

* ``zero_grad_frac``: the fraction of clean-correct points whose input gradient of the CE loss is
  exactly zero (AutoAttack ``checks.py``: zero gradients make every gradient attack a no-op).
* ``large_eps_acc``: accuracy under PGD-20 at eps = 0.5, half the pixel range, where every image
  can be turned grey: an honest model is at about 0 % (a cheap unbounded-attack check).

Per run, from the attack results (no extra compute):

* ``square_beats_whitebox``: the black-box Square attack finds a lower accuracy than every
  gradient attack: a gradient-masking signal (AutoAttack ``flags_doc.md``).
* ``pgd_weaker_than_fgsm``: an iterative gradient attack is weaker than one-step FGSM.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.attacks.pgd import pgd
from bench.data.loader import to_unit
from bench.modes import frozen_eval

SANITY_VERSION = 1
LARGE_EPS = 0.5
MAX_POINTS = 256
ZERO_GRAD_LIMIT = 0.10  # flag when more than this fraction of points has a zero input gradient
LARGE_EPS_LIMIT = 0.05  # flag when accuracy at eps = 0.5 stays above this

MESSAGES = {
    "flag_zero_grad": "zero input gradients on {flag_zero_grad_frac:.0%} of points (gradient masking?)",
    "flag_large_eps": "still {flag_large_eps_acc:.0%} accurate under PGD at eps = 0.5 (attack not converging?)",
    "flag_square_beats_whitebox": "black-box Square beats every gradient attack (gradient masking?)",
    "flag_pgd_weaker_than_fgsm": "an iterative attack is weaker than FGSM (broken attack or masking?)",
}


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict[str, Any]:
    """Zero-gradient fraction and large-eps accuracy on the first ``MAX_POINTS`` test points."""
    zero = correct = robust = 0
    n = min(len(y), MAX_POINTS)
    with frozen_eval(model):
        for i in range(0, n, batch_size):
            xb, yb = to_unit(x[i : min(i + batch_size, n)]), y[i : min(i + batch_size, n)]
            xg = xb.clone().requires_grad_(True)
            logits = model(xg)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), xg)
            ok = logits.argmax(1) == yb
            zero += int(((grad.flatten(1).abs().amax(1) == 0) & ok).sum())
            correct += int(ok.sum())
            x_adv = pgd(model, xb, yb, LARGE_EPS, LARGE_EPS / 8, 20)
            with torch.no_grad():
                robust += int((model(x_adv).argmax(1) == yb).sum())
    return {
        "n": n,
        "zero_grad_frac": zero / correct if correct else 0.0,
        "large_eps": LARGE_EPS,
        "large_eps_acc": robust / n if n else 0.0,
    }


def run_flags(checks: dict[str, Any] | None, attacks: list[dict[str, Any]]) -> dict[str, Any]:
    """Flag columns for one run from its sanity checks and its attack rows (``family``, ``robust_acc``)."""
    out: dict[str, Any] = {}
    if checks:
        out["flag_zero_grad_frac"] = checks["zero_grad_frac"]
        out["flag_large_eps_acc"] = checks["large_eps_acc"]
        out["flag_zero_grad"] = checks["zero_grad_frac"] > ZERO_GRAD_LIMIT
        out["flag_large_eps"] = checks["large_eps_acc"] > LARGE_EPS_LIMIT
    by_family: dict[str, list[float]] = {}
    for row in attacks:
        by_family.setdefault(row["family"], []).append(row["robust_acc"])
    gradient = by_family.get("fgsm", []) + by_family.get("iterative", [])
    if by_family.get("blackbox") and gradient:
        out["flag_square_beats_whitebox"] = min(by_family["blackbox"]) < min(gradient)
    if by_family.get("fgsm") and by_family.get("iterative"):
        out["flag_pgd_weaker_than_fgsm"] = max(by_family["iterative"]) > min(by_family["fgsm"])
    raised = [MESSAGES[k].format(**out) for k in MESSAGES if out.get(k)]
    out["flags"] = "; ".join(raised)
    return out
