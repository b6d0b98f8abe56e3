"""A seeded, learnable synthetic dataset for tests and smoke runs (no files needed).

Class k is a square-wave stripe pattern at orientation pi*k/C (period 4 pixels, contrast 0.6,
random phase per image) plus Gaussian noise, clipped and quantised to uint8. Orientation is a local
texture cue, so even a conv net with global pooling learns it within a few epochs, and the classes
stay separable at small eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.registry import DATASETS
from bench.types import DatasetInfo, DatasetSplits


@dataclass(frozen=True)
class SyntheticParams:
    num_classes: int = 4
    size: int = 12
    channels: int = 1
    n_train: int = 512
    n_test: int = 256
    noise: float = 0.15
    seed: int = 0

    def validate(self):
        for name in ("num_classes", "size", "channels", "n_train", "n_test"):
            if getattr(self, name) < 1:
                return name, "must be at least 1"
        if self.num_classes < 2:
            return "num_classes", "must be at least 2"
        if self.noise < 0:
            return "noise", "must be >= 0"
        return None


@DATASETS.register("synthetic", params=SyntheticParams, version=1)
def synthetic(p: SyntheticParams, roots: list[Path]) -> DatasetSplits:
    """Seeded oriented-stripe classes plus noise; learnable in a few epochs (tests, smoke runs)."""
    g = torch.Generator().manual_seed(p.seed)
    shape = (p.channels, p.size, p.size)
    theta = math.pi * torch.arange(p.num_classes) / p.num_classes
    ii, jj = torch.meshgrid(torch.arange(p.size).float(), torch.arange(p.size).float(), indexing="ij")

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, p.num_classes, (n,), generator=g)
        phase = 2 * math.pi * torch.rand((n, 1, 1), generator=g)
        t = theta[y][:, None, None]
        wave = torch.cos(2 * math.pi * (ii * torch.cos(t) + jj * torch.sin(t)) / 4 + phase)
        x = (0.5 + 0.3 * torch.sign(wave))[:, None].expand(n, *shape)
        x = x + p.noise * torch.randn((n, *shape), generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = make(p.n_train)
    test_x, test_y = make(p.n_test)
    info = DatasetInfo("synthetic", p.num_classes, shape, (0.5,) * p.channels, (0.25,) * p.channels)
    return DatasetSplits(info, train_x, train_y, test_x, test_y, source="generated")
