"""Core runtime types shared by the engine and the plug-ins, and the rules of a threat model.

:func:`parse_threat` and :func:`parse_eps` read a norm and a radius as a suite's ``threat:`` (and
``eval.eps``, ``bench.attack``, ``bench.evaluate``) writes them, with the same one-line errors everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import torch

from bench.core.errors import ConfigError, show
from bench.core.params import did_you_mean, parse_fraction


@dataclass(frozen=True)
class ThreatModel:
    """The perturbation set: an L-inf, L2 or L1 ball of radius ``eps`` in [0,1] pixel space."""

    norm: Literal["Linf", "L2", "L1"] = "Linf"
    eps: Fraction = Fraction(8, 255)
    eps_text: str = "8/255"  # as written in the suite, for table headers

    @property
    def eps_float(self) -> float:
        return float(self.eps)


NORMS = ("Linf", "L2", "L1")


def parse_eps(raw: Any, where: str, norm: str) -> tuple[Any, str]:
    """An exact radius and its text as written: in (0, 1] for L-inf, > 0 for L2 and L1 (pixel space)."""
    eps = parse_fraction(raw, where)
    if not (0 < eps <= 1 if norm == "Linf" else eps > 0):
        raise ConfigError(where, f"must be in {'(0, 1]' if norm == 'Linf' else '(0, inf)'} for {norm} (pixel space), got {show(raw)}")
    return eps, raw.strip() if isinstance(raw, str) else repr(raw)


def parse_threat(raw: Any, where: str) -> ThreatModel:
    """``{norm: Linf, eps: 8/255}`` -> :class:`ThreatModel`, strictly."""
    if not isinstance(raw, dict):
        raise ConfigError(where, "expected a mapping {norm: Linf, eps: 8/255}")
    unknown = set(raw) - {"norm", "eps"}
    if unknown:
        raise ConfigError(f"{where}.{min(unknown, key=str)}", "unknown key; allowed: norm, eps")
    norm = raw.get("norm", "Linf")
    if norm not in NORMS:
        raise ConfigError(f"{where}.norm", f"expected Linf, L2 or L1, got {show(norm)}{did_you_mean(norm, NORMS)}")
    if "eps" not in raw:
        raise ConfigError(f"{where}.eps", "missing (write it as 8/255 or 0.1)")
    return ThreatModel(norm, *parse_eps(raw["eps"], f"{where}.eps", norm))


@dataclass(frozen=True)
class TrainContext:
    """What a defence may know about the schedule (it never sees the optimiser)."""

    epoch: int
    step: int
    epochs: int
    milestones: tuple[int, ...]
    threat: ThreatModel
    num_classes: int
    folded: Any = None  # train.fuse_bn: the run's ``bench.device.precision.FoldedView`` of the model being trained
    precision: str = "fp32"  # the path the step runs (train.precision resolved: bench/device/native.py)

    @property
    def first_milestone(self) -> int:
        return first_milestone(self.milestones, self.epochs)

    def crafting_model(self, model: Any) -> Any:
        """What to craft an eval-mode adversary against: ``model``, or with ``train.fuse_bn`` (when
        ``model`` is the model being trained) its BN-folded view, same function up to rounding."""
        return self.folded.current() if self.folded is not None and model is self.folded.source else model

    def attack_target(self, model: Any, bn: str = "eval") -> Any:
        """What a defence takes its adversary's input gradients through, in BatchNorm mode ``bn`` (the
        caller sets the mode): :meth:`crafting_model` in eval mode, and under fp16 the gradient-scaling
        view (``bench.device.precision.attack_model``) so small input gradients do not underflow."""
        from bench.device.precision import attack_model

        return attack_model(self.crafting_model(model) if bn == "eval" else model, self.precision)


def first_milestone(milestones: tuple[int, ...], epochs: int) -> int:
    """The epoch (0-indexed) of the first LR drop; ``epochs`` when the schedule has none."""
    return milestones[0] if milestones else epochs


@dataclass(frozen=True)
class SharedStart:
    """A defence whose first ``epochs`` epochs are exactly another defence's training.

    Declared by a defence as ``shared_start(params, first_milestone) -> SharedStart | None``
    (a registry capability): until epoch ``epochs`` (0-indexed, exclusive) its loss is the defence
    ``name`` with ``params`` bit for bit, with the same draws from every RNG. The planner then trains
    those epochs once, as a ``prefix`` task, and both runs continue from its saved state
    (``bench/plan/expand.py``); ``logs`` are this defence's own logged values over those epochs (FR's
    ``fr: 0, fr_active: 0``). ``tests/test_defences.py`` checks the claim for every defence that declares one.
    """

    name: str
    params: Any
    epochs: int
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class LossOut:
    """A defence's result: the scalar loss to minimise and detached values to log.

    ``after_step``, when set, is called by the training loop right after ``optimizer.step()``
    (AWP uses it to remove its weight perturbation); defences never step the optimiser themselves.
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    after_step: Callable[[], None] | None = None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    shape: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class DatasetSplits:
    """Whole splits as uint8 tensors N x C x H x W with int64 labels (the harness splits off val)."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str = ""  # where the files were read from (provenance)
