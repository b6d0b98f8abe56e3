"""A seeded, learnable synthetic dataset for tests and smoke runs (no files needed).

Each class has a fixed random binary template (pixels at 0.2 or 0.8); an image is its class
template plus Gaussian noise, clipped and quantised to uint8. Templates differ by 0.6 on about half
the pixels, so a small model learns the task in one epoch and it stays learnable at small eps.
"""

from __future__ import annotations

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
    """Seeded class templates plus noise; learnable in one epoch (tests, smoke runs)."""
    g = torch.Generator().manual_seed(p.seed)
    shape = (p.channels, p.size, p.size)
    templates = 0.2 + 0.6 * (torch.rand((p.num_classes, *shape), generator=g) > 0.5).float()

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, p.num_classes, (n,), generator=g)
        x = templates[y] + p.noise * torch.randn((n, *shape), generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = make(p.n_train)
    test_x, test_y = make(p.n_test)
    info = DatasetInfo("synthetic", p.num_classes, shape, (0.5,) * p.channels, (0.25,) * p.channels)
    return DatasetSplits(info, train_x, train_y, test_x, test_y, source="generated")
