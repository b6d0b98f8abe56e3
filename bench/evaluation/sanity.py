"""Sanity checks that catch broken evaluations (gradient masking and friends), stored as columns.

Per evaluated weights (one cheap job, cached like evaluations):

* ``zero_grad_frac``: the fraction of clean-correct points whose input gradient of the CE loss is
  exactly zero (AutoAttack ``checks.py``: zero gradients make every gradient attack a no-op).
* ``large_eps_acc``: accuracy under PGD-20 at eps = 0.5, half the pixel range, where every image
  can be turned grey: an honest model is at about 0 % (a cheap unbounded-attack check). As in the
  evaluations, only clean-correct points are attacked; the others count as not robust.

Per leaderboard row, from the per-sample attack results of all its seeds (no extra compute), with
a paired test rather than a raw comparison of accuracies (one example in 200 is noise, not a
broken attack): ``stats.paired_p`` on the examples both attacks saw (exact McNemar for one seed,
the exact sign-flip test over examples for several), Holm-corrected over the comparisons of the
flag, at ``ALPHA`` (``bench/core/stats.py``):

* ``square_beats_whitebox``: the black-box Square attack is significantly stronger than every
  gradient attack: a gradient-masking signal (AutoAttack ``flags_doc.md``).
* ``pgd_weaker_than_fgsm``: an iterative gradient attack is significantly weaker than one-step FGSM.

The smallest Holm-adjusted p-value of each comparison flag is stored beside it (``*_p``).

Under ``eval.cascade`` both comparison flags are ``None`` (not computed): a cascaded column only
attacked the points the columns to its left left robust, so for any two columns the points the
earlier one broke were never attacked by the later one, and one cell of their 2x2 table is never
observed. Compared as if independent, a later attack can never look weaker (a completely broken PGD
after FGSM passes) and Square last always looks stronger (a false masking alarm on an honest model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.attacks.pgd import pgd
from bench.core import stats
from bench.core.modes import frozen_eval
from bench.data.loader import to_unit
from bench.device.precision import attack_model, autocast

SANITY_VERSION = 2  # 2: the large-eps PGD attacks only clean-correct points
LARGE_EPS = 0.5
MAX_POINTS = 256
ZERO_GRAD_LIMIT = 0.10  # flag when more than this fraction of points has a zero input gradient
LARGE_EPS_LIMIT = 0.05  # flag when accuracy at eps = 0.5 stays above this
ALPHA = stats.ALPHA  # significance level of the attack-comparison flags

MESSAGES = {
    "flag_zero_grad": "zero input gradients on {flag_zero_grad_frac:.0%} of points (gradient masking?)",
    "flag_large_eps": "still {flag_large_eps_acc:.0%} accurate under PGD at eps = 0.5 (attack not converging?)",
    "flag_square_beats_whitebox": "black-box Square beats every gradient attack, p = {flag_square_beats_whitebox_p:.2g} (gradient masking?)",
    "flag_pgd_weaker_than_fgsm": "an iterative attack is weaker than FGSM, p = {flag_pgd_weaker_than_fgsm_p:.2g} (broken attack or masking?)",
}


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, precision: str = "fp32") -> dict[str, Any]:
    """Zero-gradient fraction and large-eps accuracy on the first ``MAX_POINTS`` test points.

    The gradients are always fp32 (bf16 could round small gradients to exactly zero); the large-eps
    PGD runs in ``precision`` (the path ``eval.precision`` resolved to), its final predictions in fp32.
    """
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
            if ok.any():
                with autocast(xb.device, precision):
                    x_adv = pgd(attack_model(model, precision), xb[ok], yb[ok], LARGE_EPS, LARGE_EPS / 8, 20)
                with torch.no_grad():
                    robust += int((model(x_adv).argmax(1) == yb[ok]).sum())
    return {
        "n": n,
        "zero_grad_frac": zero / correct if correct else 0.0,
        "large_eps": LARGE_EPS,
        "large_eps_acc": robust / n if n else 0.0,
    }


def _runs(row: dict[str, Any]) -> stats.Runs:
    """An attack result's per-seed outcomes: ``runs`` (seed -> (ids, robust)) or one seed's ``sample_id`` and ``robust``."""
    if "runs" in row:
        return row["runs"]
    return {0: (np.asarray(row["sample_id"]), np.asarray(row["robust"], dtype=bool))}


def stronger_p(strong: dict[str, Any], weak: dict[str, Any]) -> float:
    """One-sided evidence that attack ``strong`` leaves fewer robust points than ``weak``.

    ``stats.paired_p`` on the seeds and examples both saw when ``strong`` leaves fewer robust, else
    1. Each argument has ``runs`` (seed -> (sample ids, robust flags)), or one seed's
    ``sample_id`` and per-sample ``robust`` flags.
    """
    seeds, (a, b) = stats.aligned(_runs(strong), _runs(weak))
    if not seeds or a.sum() >= b.sum():
        return 1.0
    return stats.paired_p(a, b)


def run_flags(checks: dict[str, Any] | None, attacks: list[dict[str, Any]], cascade: bool = False) -> dict[str, Any]:
    """Flag columns for one run from its sanity checks and its row's attack results.

    Each attack result has ``family`` and its outcomes (see :func:`stronger_p`); ``cascade``:
    the attacks ran as an ``eval.cascade``, so the comparison flags are ``None`` (module docstring).
    """
    out: dict[str, Any] = {}
    if checks:
        out["flag_zero_grad_frac"] = checks["zero_grad_frac"]
        out["flag_large_eps_acc"] = checks["large_eps_acc"]
        out["flag_zero_grad"] = checks["zero_grad_frac"] > ZERO_GRAD_LIMIT
        out["flag_large_eps"] = checks["large_eps_acc"] > LARGE_EPS_LIMIT
    by_family: dict[str, list[dict[str, Any]]] = {}
    for row in attacks:
        by_family.setdefault(row["family"], []).append(row)
    gradient = by_family.get("fgsm", []) + by_family.get("iterative", [])
    square = bool(by_family.get("blackbox") and gradient)
    fgsm_vs_iterative = bool(by_family.get("fgsm") and by_family.get("iterative"))
    if cascade:  # not computed: one cell of each 2x2 table is never observed (module docstring)
        for name, present in (("square_beats_whitebox", square), ("pgd_weaker_than_fgsm", fgsm_vs_iterative)):
            if present:
                out[f"flag_{name}_p"] = out[f"flag_{name}"] = None
    else:
        if square:
            # Square counts as beating the white-box attacks when it is significantly stronger than each of them
            per_square = [max(stats.holm([stronger_p(sq, g) for g in gradient])) for sq in by_family["blackbox"]]
            out["flag_square_beats_whitebox_p"] = min(per_square)
            out["flag_square_beats_whitebox"] = out["flag_square_beats_whitebox_p"] < ALPHA
        if fgsm_vs_iterative:
            pairs = [(f, it) for it in by_family["iterative"] for f in by_family["fgsm"]]
            out["flag_pgd_weaker_than_fgsm_p"] = min(stats.holm([stronger_p(f, it) for f, it in pairs]))
            out["flag_pgd_weaker_than_fgsm"] = out["flag_pgd_weaker_than_fgsm_p"] < ALPHA
    raised = [MESSAGES[k].format(**out) for k in MESSAGES if out.get(k)]
    out["flags"] = "; ".join(raised)
    return out
