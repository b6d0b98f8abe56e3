"""Attack plug-ins: ``fn(model, x, y, threat, params) -> x_adv`` on [0,1] inputs.

The evaluator calls every attack with the model in eval mode and checks each returned batch with
:func:`check_adversarial`; a violation is an error naming the attack, never a silently wrong number.
Adding an attack (its contract, ``bench.registry.AttackSpec``, and an example): ``bench/attacks/README.md``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from bench.core import params as params_mod
from bench.core.errors import EvaluationError
from bench.registry import ATTACKS
from bench.types import parse_threat  # the suite's rules and messages for norm and eps

TOLERANCE = 1e-6


NORM_TEXT = {"Linf": "L-inf", "L2": "L2", "L1": "L1"}


def distances(x: torch.Tensor, x_adv: torch.Tensor, norm: str = "Linf") -> torch.Tensor:
    """Per-sample distance ``||x_adv - x||`` in ``norm`` (L2 and L1 summed in float64)."""
    delta = (x_adv - x).flatten(1)
    if norm == "L2":
        return delta.double().norm(dim=1)
    if norm == "L1":
        return delta.double().abs().sum(dim=1)
    return delta.abs().amax(dim=1).double() if delta.shape[1] else delta.new_zeros(len(delta), dtype=torch.float64)


def ball_tolerance(eps: float, norm: str = "Linf", tol: float = TOLERANCE) -> float:
    """The slack allowed past eps: ``tol``, and for L2 and L1 (sums over every pixel, whose float32
    rounding grows with the radius) at least 1e-5 * eps."""
    return max(tol, 1e-5 * eps) if norm in ("L2", "L1") else tol


def check_adversarial(
    name: str, x: torch.Tensor, x_adv: torch.Tensor, eps: float, tol: float = TOLERANCE, norm: str = "Linf"
) -> float:
    """Raise EvaluationError unless ``x_adv`` is inside the eps-ball (of ``norm``) around ``x`` and inside [0,1].

    Returns the largest distance seen in that norm (recorded with the results).
    """
    if x_adv.shape != x.shape:
        raise EvaluationError(f"attack {name!r} returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}")
    if x.numel() == 0:
        return 0.0
    if not torch.isfinite(x_adv).all():
        raise EvaluationError(f"attack {name!r} returned non-finite values")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < -tol or hi > 1 + tol:
        raise EvaluationError(f"attack {name!r} left [0,1] (values in [{lo:.6g}, {hi:.6g}])")
    dist, shown, tol = float(distances(x, x_adv, norm).amax()), NORM_TEXT.get(norm, norm), ball_tolerance(eps, norm, tol)
    if dist > eps + tol:
        raise EvaluationError(f"attack {name!r} left the eps-ball: {shown} distance {dist:.6g} > eps {eps:.6g}")
    return dist


def label(name: str, p: Any, norm: str = "Linf") -> str:
    """Column label of an attack in tables under the threat's ``norm``, e.g. ``PGD-20``.

    A plug-in's ``label`` callable gets the params, and the norm too when it takes a second
    argument: a label may only change under another norm (L-inf labels are the tables' names).
    """
    fn = ATTACKS.get(name).label
    if fn is None:
        return name.upper()
    return fn(p, norm) if len(inspect.signature(fn).parameters) > 1 else fn(p)


def attack(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | str, norm: str = "Linf", **params: Any
) -> torch.Tensor:
    """Library API: run a registered attack on a batch in [0,1]; returns checked ``x_adv``.

    ``eps`` may be a float or a fraction string such as ``"8/255"``; ``norm`` is ``Linf``, ``L2`` or ``L1``;
    both are checked as a suite's ``threat`` is (``eps=300`` for L-inf raises ConfigError).
    The model is put in eval mode for the attack and its previous mode is restored.
    """
    entry = ATTACKS.get(name)
    p = params_mod.build(entry.params, params, f"attack {name}")
    threat = parse_threat({"norm": norm, "eps": eps}, f"bench.attack({name!r})")
    eps_exact = threat.eps
    was_training = model.training
    model.eval()
    try:
        x_adv = entry.fn(model, x, y, threat, p)
    finally:
        model.train(was_training)
    check_adversarial(name, x, x_adv, float(eps_exact), norm=norm)
    return x_adv.detach()


from bench.attacks import autoattack, cw, pgd  # noqa: E402,F401
