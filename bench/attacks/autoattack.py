"""AutoAttack and its parts through the pinned ``pyautoattack`` 0.2.0 package (methods.md 4.4).

Paper: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (arXiv 2003.01690). Code: ``pyautoattack`` 0.2.0, the packaged
reference ``fra31/auto-attack`` attacks behind a keyword-only wrapper (landscape.md section 7).

* ``autoattack``: ``standard`` is exactly the reference ensemble (apgd-ce, apgd-t, fab-t, square;
  1 restart, 100 iterations, 9 target classes, 5000 queries; see :func:`configured`); ``rand`` is
  the reference version for randomised defences (apgd-ce, apgd-dlr, EOT 20); ``custom`` runs the
  chosen subset as a cascade with the budgets given here. Only ``standard`` is labelled
  ``AutoAttack``; a custom cascade's label spells what ran (``APGD-CE+T·50it·2tgt``).
* ``apgd-ce``, ``apgd-t``, ``square``: one attack each, through the same wrapper.

Adapter behaviour and deviations:

* device (the input's), eps, norm (the threat model's: Linf, L2 or L1, the reference's own L2 and
  L1 versions of APGD, FAB and Square) and seed are always passed explicitly.
* L1 (Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks", ICML 2021): ``standard``
  is what the reference's ``set_version('standard')`` runs for L1, unchanged: apgd-ce with 5
  restarts, apgd-t with 5 target classes, both with ``use_largereps`` (the radius schedule 3 eps,
  2 eps, eps over 30/30/40 % of the iterations), then fab-t (9 targets) and square (5000 queries).
  A ``custom`` cascade under L1 keeps ``use_largereps`` on for APGD, as the reference's L1 setting,
  with the budgets given here. Square L1 has the same tiling limit as Square L2 (see
  :func:`square_l2_fits`; measured identical from 10x10 to 33x33 px).
* Target classes are capped at ``num_classes - 1`` when the model has fewer than 10 classes: the
  reference code indexes the ``target_class``-th largest logit and raises IndexError on such
  models (for apgd-t and fab-t, standard included). With 10 or more classes nothing changes.
  APGD-T needs at least 4 classes and APGD-DLR (``rand``) at least 3; fewer is an error.
* Setting ``n_iter`` on an existing APGD object leaves its step-size checkpoints at their
  100-iteration values; :func:`_set_apgd_iters` sets them as ``APGDAttack(n_iter=...)`` would.
* The sub-attacks seed the global torch RNG; the caller's RNG state is restored afterwards.
* Its ``auto-attack`` logger (progress at debug level, the reference sanity checks such as
  "randomised defence" or "zero gradients" as warnings) is forwarded to this module's logger,
  which prints nothing unless the application configures logging.
* FAB computes gradients with ``backward()``; parameters are frozen during the run so none
  accumulate, and the model's modes and ``requires_grad`` flags are restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

from bench.core.errors import BenchError
from bench.core.modes import frozen_eval
from bench.core.params import range_problem
from bench.registry import ATTACKS
from bench.types import ThreatModel

LOG = logging.getLogger(__name__)
LOG.addHandler(logging.NullHandler())

AAName = Literal["apgd-ce", "apgd-t", "fab-t", "square"]
AA_NAMES: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")
BUDGETS = ("n_iter", "n_restarts", "n_target_classes", "n_queries")


@dataclass(frozen=True)
class AutoAttackParams:
    version: Literal["standard", "rand", "custom"] = "standard"
    attacks: tuple[AAName, ...] = ()  # custom only: a cascade over these, in this order
    n_iter: int = 100  # custom budgets (standard values): APGD and FAB iterations,
    n_restarts: int = 1  # APGD-CE / APGD-T restarts (FAB-T and Square always run 1),
    n_target_classes: int = 9  # APGD-T and FAB-T target classes (capped at num_classes - 1),
    n_queries: int = 5000  # Square queries
    seed: int = 0
    batch_size: int = 500

    def validate(self):
        if self.version == "custom":
            if not self.attacks:
                return "attacks", f"version custom needs a list of attacks from {', '.join(AA_NAMES)}"
            unknown = [a for a in self.attacks if a not in AA_NAMES]
            if unknown:
                return "attacks", f"unknown {unknown[0]!r}; allowed: {', '.join(AA_NAMES)}"
            if len(set(self.attacks)) != len(self.attacks):
                return "attacks", "lists an attack twice"
        else:
            if self.attacks:
                return "attacks", f"only with version custom (version {self.version} uses the reference list)"
            default = AutoAttackParams()
            for name in BUDGETS:
                if getattr(self, name) != getattr(default, name):
                    return name, f"only with version custom (version {self.version} uses the reference budgets)"
        return range_problem(self, min1=(*BUDGETS, "batch_size"), nonneg=("seed",))


def _set_apgd_iters(apgd: Any, n_iter: int) -> None:
    """Iterations and step-size checkpoints as ``APGDAttack.__init__(n_iter=n_iter)`` sets them."""
    apgd.n_iter = apgd.n_iter_orig = n_iter
    apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = (max(int(f * n_iter), 1) for f in (0.22, 0.06, 0.03))


def configured(
    model: nn.Module, p: AutoAttackParams, eps: float, device: torch.device | str, num_classes: int | None = None,
    norm: str = "Linf",
) -> Any:
    """The configured ``pyautoattack.AutoAttack`` object (reference settings for standard/rand).

    With ``num_classes`` given, target classes are capped at ``num_classes - 1`` (a no-op for 10
    or more classes).
    """
    from pyautoattack import AutoAttack

    custom = p.version == "custom"
    aa = AutoAttack(
        model, attacks=list(p.attacks) if custom else None, device=device, eps=eps, norm=norm,
        seed=p.seed, version=p.version,
    )
    if custom:
        for apgd in (aa.apgd, aa.apgd_targeted):
            _set_apgd_iters(apgd, p.n_iter)
            apgd.n_restarts = p.n_restarts
            apgd.use_largereps = norm == "L1"  # the reference's L1 APGD (set_version('standard'))
        aa.fab.n_iter = p.n_iter
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = p.n_target_classes
        aa.square.n_queries = p.n_queries
    if num_classes is not None:
        for attack in (aa.apgd_targeted, aa.fab):
            attack.n_target_classes = min(attack.n_target_classes, max(num_classes - 1, 1))
    return aa


class _Forward(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if LOG.isEnabledFor(record.levelno):
            LOG.handle(logging.makeLogRecord({**record.__dict__, "name": LOG.name}))


@contextlib.contextmanager
def _isolated(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Frozen eval model, routed logging, caller's RNG and trace function restored afterwards."""
    from pyautoattack import checks


    aa_log, handler = logging.getLogger("auto-attack"), _Forward()
    propagate, trace = aa_log.propagate, sys.gettrace()
    cuda = []  # CUDA RNGs to restore: it seeds the current device; x may live on another one
    if torch.cuda.is_initialized():
        cuda = sorted({torch.cuda.current_device(), x.device.index if x.is_cuda else None} - {None})
    for key in checks.funcs:  # its dynamic-defence check counts calls cumulatively, across models
        checks.funcs[key] = 0
    aa_log.addHandler(handler)
    aa_log.propagate = False
    try:
        with frozen_eval(model), torch.random.fork_rng(devices=cuda):
            yield
    finally:
        aa_log.removeHandler(handler)
        aa_log.propagate = propagate
        sys.settrace(trace)  # its check_dynamic ends with sys.settrace(None) (coverage, debuggers)


def square_l2_fits(h: int, w: int) -> bool:
    """Whether the reference Square-L2 initialisation tiles an h x w image.

    It places (side // s) blocks of size s = side // 5 from offset (side - 5 s) // 2 and fails with a
    broadcast error when the last block runs past the border (e.g. 12x12); 28x28 and 32x32 fit.
    """
    return all((n - 5 * (n // 5)) // 2 + (n // (n // 5)) * (n // 5) <= n for n in (h, w) if n >= 5)


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: AutoAttackParams) -> torch.Tensor:
    """x_adv from a cascade run of ``configured(...)`` on ``x`` (unfooled points come back clean)."""
    if len(x) == 0:
        return x.clone()
    square = p.version == "standard" or "square" in p.attacks
    if threat.norm in ("L2", "L1") and square and not square_l2_fits(*x.shape[-2:]):
        raise BenchError(
            f"Square {threat.norm} (reference code) cannot run on {x.shape[-2]}x{x.shape[-1]} images; use L-inf or drop Square"
        )
    with _isolated(model, x):
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
        name, least = ("apgd-dlr", 3) if p.version == "rand" else ("apgd-t", 4)
        if (p.version != "custom" or name in p.attacks) and num_classes < least:
            raise BenchError(f"AutoAttack {name} needs at least {least} classes; the model has {num_classes}")
        aa = configured(model, p, threat.eps_float, x.device, num_classes, threat.norm)
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=p.batch_size)
    return x_adv.detach()


SHORT = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}
# budget -> (suffix, the attacks it applies to)
BUDGET_SUFFIX = {
    "n_iter": ("it", ("apgd-ce", "apgd-t", "fab-t")),
    "n_restarts": ("rs", ("apgd-ce", "apgd-t")),
    "n_target_classes": ("tgt", ("apgd-t", "fab-t")),
    "n_queries": ("q", ("square",)),
}


def spelled_label(attacks: tuple[str, ...], p: Any) -> str:
    """What ran, e.g. ``APGD-CE+T·50it·2tgt``: the attacks, then every budget that is not the standard one.

    Only the standard ensemble is called ``AutoAttack``; a reduced cascade is never labelled as if
    it were comparable with published AutoAttack numbers.
    """
    text = "+".join(SHORT[a] for a in attacks).replace("APGD-CE+APGD-T", "APGD-CE+T")
    default = AutoAttackParams()
    for name, (suffix, applies) in BUDGET_SUFFIX.items():
        value = getattr(p, name, None)
        if value is not None and value != getattr(default, name) and set(applies) & set(attacks):
            text += f"·{value}{suffix}"
    return text


def autoattack_label(p: AutoAttackParams) -> str:
    return {"standard": "AutoAttack", "rand": "AutoAttack-rand"}.get(p.version) or spelled_label(p.attacks, p)


RAND_EOT = 20  # the reference rand version's EOT iterations (APGD ``eot_iter``)
ROBUST_FRACTION = 0.5  # for the estimates: AutoAttack's later stages run only on the points still robust


def cascade_cost(attacks: tuple[str, ...], p: Any) -> float:
    """Forward-equivalents per attacked image of a cascade (``bench/plan/cost.py``): the clean check, then per
    point assumed still robust APGD 2 per iteration per restart (x targets for APGD-T), FAB-T 3 per
    iteration per target, Square 1 per query."""
    n_iter, restarts = getattr(p, "n_iter", 100), getattr(p, "n_restarts", 1)
    targets, queries = getattr(p, "n_target_classes", 9), getattr(p, "n_queries", 5000)
    per = {"apgd-ce": 2 * n_iter * restarts, "apgd-t": 2 * n_iter * restarts * targets, "fab-t": 3 * n_iter * targets,
           "square": queries, "apgd-dlr": 2 * n_iter * restarts}  # fmt: skip
    return 1 + ROBUST_FRACTION * sum(per.get(a, 0) for a in attacks)


def autoattack_cost(p: AutoAttackParams) -> float:
    """The standard and rand versions as measured in landscape.md 6.4 (per robust point); custom: its cascade."""
    return 1 + ROBUST_FRACTION * (7900 + 2 * 2000) if p.version != "custom" else cascade_cost(p.attacks, p)


@ATTACKS.register(
    "autoattack", params=AutoAttackParams, version=1, family="ensemble", label=autoattack_label,
    eot=lambda p: RAND_EOT if p.version == "rand" else 1, cost=autoattack_cost,
)  # fmt: skip
def autoattack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: AutoAttackParams
) -> torch.Tensor:
    """AutoAttack (Croce & Hein 2020) via pyautoattack 0.2.0: standard, rand or a custom cascade."""
    return run(model, x, y, threat, p)


@dataclass(frozen=True)
class APGDCEParams:
    n_iter: int = 100
    n_restarts: int = 1
    seed: int = 0
    batch_size: int = 500

    def validate(self):
        return range_problem(self, min1=("n_iter", "n_restarts", "batch_size"), nonneg=("seed",))


@dataclass(frozen=True)
class APGDTParams(APGDCEParams):
    n_target_classes: int = 9  # capped at num_classes - 1

    def validate(self):
        return range_problem(self, min1=("n_iter", "n_restarts", "n_target_classes", "batch_size"), nonneg=("seed",))


@dataclass(frozen=True)
class SquareParams:
    n_queries: int = 5000
    seed: int = 0
    batch_size: int = 500

    def validate(self):
        return range_problem(self, min1=("n_queries", "batch_size"), nonneg=("seed",))


def _single(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: Any) -> torch.Tensor:
    budgets = {f.name: getattr(p, f.name) for f in fields(p)}
    custom = AutoAttackParams("custom", (name,), **budgets)  # type: ignore[arg-type]
    return run(model, x, y, threat, custom)


@ATTACKS.register("apgd-ce", params=APGDCEParams, version=1, family="iterative", label=lambda p: spelled_label(("apgd-ce",), p),
    cost=lambda p: cascade_cost(("apgd-ce",), p),
)
def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: APGDCEParams) -> torch.Tensor:
    """APGD on cross-entropy (Croce & Hein 2020), reference code via pyautoattack 0.2.0."""
    return _single("apgd-ce", model, x, y, threat, p)


@ATTACKS.register("apgd-t", params=APGDTParams, version=1, family="iterative", label=lambda p: spelled_label(("apgd-t",), p),
    cost=lambda p: cascade_cost(("apgd-t",), p),
)
def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: APGDTParams) -> torch.Tensor:
    """Targeted APGD on the DLR loss (Croce & Hein 2020), reference code via pyautoattack 0.2.0."""
    return _single("apgd-t", model, x, y, threat, p)


@ATTACKS.register("square", params=SquareParams, version=1, family="blackbox", label=lambda p: spelled_label(("square",), p),
    cost=lambda p: cascade_cost(("square",), p),
)
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, p: SquareParams) -> torch.Tensor:
    """Square Attack (Andriushchenko et al. 2020, arXiv 1912.00049), reference code via pyautoattack 0.2.0."""
    return _single("square", model, x, y, threat, p)
