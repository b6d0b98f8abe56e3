"""ResNet-18, CIFAR variant (He et al. 2016, arXiv 1512.03385; definition of kuangliu/pytorch-cifar
``models/resnet.py``, as used by the FR code ``model/ResNet.py``).

3x3 stride-1 stem conv (64 channels, no bias) + BN + ReLU, no max-pool, BasicBlocks [2, 2, 2, 2]
at widths 64/128/256/512 (strides 1/2/2/2, 1x1 conv + BN projection shortcuts),
``AdaptiveAvgPool2d(1)`` and ``Linear(512, C)``. The adaptive pool equals kuangliu's
``avg_pool2d(out, 4)`` at 32x32 and lets the same network run on 64x64 (Tiny ImageNet).
11,173,962 parameters for 10 classes. PyTorch default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.models import ModelParams
from bench.models.blocks import stages
from bench.registry import MODELS


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_classes: int, in_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages(BasicBlock, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


@MODELS.register("resnet18", params=ModelParams, version=1)
def resnet18(p: ModelParams, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """ResNet-18, CIFAR variant (kuangliu): 3x3 stem, no max-pool, 32x32 or 64x64 (11.17 M)."""
    return ResNet((2, 2, 2, 2), num_classes, shape[0])
