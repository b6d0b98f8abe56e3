"""Core runtime types shared by the engine and the plug-ins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import torch


@dataclass(frozen=True)
class ThreatModel:
    """The perturbation set: an L-inf, L2 or L1 ball of radius ``eps`` in [0,1] pixel space."""

    norm: Literal["Linf", "L2", "L1"] = "Linf"
    eps: Fraction = Fraction(8, 255)
    eps_text: str = "8/255"  # as written in the suite, for table headers

    @property
    def eps_float(self) -> float:
        return float(self.eps)


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
    (``bench/plan/plan.py``); ``logs`` are this defence's own logged values over those epochs (FR's
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
