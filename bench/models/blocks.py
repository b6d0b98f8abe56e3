"""Residual building blocks shared by the ResNet family (He et al. 2016, arXiv 1512.03385 and 1603.05027).

``stages``: the four stages of a ResNet-18-style network (widths 64/128/256/512, strides 1/2/2/2),
used by ResNet-18 and PreActResNet-18. ``PreActivationBlock``: the pre-activation residual block
shared by PreActResNet and WideResNet:
BN-ReLU-conv3x3 twice, plus a shortcut that takes the pre-activated input. The two reference codes
name and build the projection differently (``shortcut = Sequential(conv1x1)`` in PreActResNet,
``convShortcut = conv1x1`` in TRADES' WideResNet), and their checkpoints carry those names, so each
subclass keeps its own attribute and says when it projects; the layers and the arithmetic are here once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def stages(block: Callable[[int, int, int], nn.Module], blocks: tuple[int, ...], cin: int = 64) -> list[nn.Sequential]:
    """One ``nn.Sequential`` per stage: ``blocks[i]`` blocks, the first with the stage's stride and width."""
    layers = []
    for n, cout, stride in zip(blocks, (64, 128, 256, 512), (1, 2, 2, 2)):
        layers.append(nn.Sequential(block(cin, cout, stride), *(block(cout, cout, 1) for _ in range(n - 1))))
        cin = cout
    return layers


class PreActivationBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)

    def project(self, act: torch.Tensor) -> torch.Tensor | None:
        """The projection shortcut of the pre-activated input, or None for the identity."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu(self.bn1(x))
        shortcut = self.project(act)
        out = self.conv2(torch.relu(self.bn2(self.conv1(act))))
        return out + (x if shortcut is None else shortcut)
