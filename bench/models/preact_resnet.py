"""PreActResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks", arXiv 1603.05027),
as defined by Rice et al. 2020 (locuslab/robust_overfitting ``preactresnet.py``) and Pang et al.
2021 "Bag of Tricks for Adversarial Training" (P2333/Bag-of-Tricks-for-AT ``models/preactresnet.py``).

3x3 stride-1 stem conv (64, no bias), PreActBlocks [2, 2, 2, 2] (BN-ReLU-conv twice; the 1x1
projection shortcut, no BN, takes the pre-activated input), a final BN + ReLU, global average pool
and ``Linear(512, C)``. ``AdaptiveAvgPool2d(1)`` replaces ``avg_pool2d(out, 4)`` (equal at 32x32)
so 64x64 inputs work too. 11,172,170 parameters for 10 classes. PyTorch default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.models import ModelParams
from bench.models.blocks import PreActivationBlock, stages
from bench.registry import MODELS


class PreActBlock(PreActivationBlock):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(cin, cout, stride)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def project(self, act: torch.Tensor) -> torch.Tensor | None:
        return None if self.shortcut is None else self.shortcut(act)


class PreActResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_classes: int, in_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages(PreActBlock, blocks)
        self.bn = nn.BatchNorm2d(512)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.linear(self.pool(torch.relu(self.bn(out))).flatten(1))


@MODELS.register("preact_resnet18", params=ModelParams, version=1)
def preact_resnet18(p: ModelParams, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """PreActResNet-18 (Rice et al. / Bag of Tricks definition), 32x32 or 64x64 (11.17 M)."""
    return PreActResNet((2, 2, 2, 2), num_classes, shape[0])
