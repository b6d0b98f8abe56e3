"""tiny_cnn: a registered test model (two convs with BatchNorm, global pool, linear)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.models import ModelParams
from bench.registry import MODELS


@dataclass(frozen=True)
class TinyCNNParams(ModelParams):
    width: int = 8

    def validate(self):
        return ("width", "must be at least 1") if self.width < 1 else None


@MODELS.register("tiny_cnn", params=TinyCNNParams, version=1)
def tiny_cnn(p: TinyCNNParams, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """Two 3x3 convs with BatchNorm, global average pool, linear head; for tests and smoke runs."""
    w = p.width
    return nn.Sequential(
        nn.Conv2d(shape[0], w, 3, padding=1),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, padding=1, stride=2),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * w, num_classes),
    )
