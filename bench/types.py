"""Core runtime types shared by the engine and the plug-ins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import torch


@dataclass(frozen=True)
class ThreatModel:
    """The perturbation set: an L-inf or L2 ball of radius ``eps`` in [0,1] pixel space."""

    norm: Literal["Linf", "L2"] = "Linf"
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
    folded: Any = None  # train.fuse_bn: the run's ``bench.precision.FoldedView`` of the model being trained

    @property
    def first_milestone(self) -> int:
        return self.milestones[0] if self.milestones else self.epochs

    def crafting_model(self, model: Any) -> Any:
        """What to craft an eval-mode adversary against: ``model``, or with ``train.fuse_bn`` (when
        ``model`` is the model being trained) its BN-folded view, same function up to rounding."""
        return self.folded.current() if self.folded is not None and model is self.folded.source else model


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
