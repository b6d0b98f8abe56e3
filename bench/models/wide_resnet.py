"""WideResNet (Zagoruyko & Komodakis 2016, arXiv 1605.07146) as defined by TRADES
(yaodongyu/TRADES ``models/wideresnet.py``, copied by the FR code as ``model/Wide_ResNet.py``).

Pre-activation BasicBlocks (BN-ReLU-conv3x3 twice, dropRate 0; a 1x1 ``convShortcut`` from the
pre-activated input where the width changes), widths 16 / 16k / 32k / 64k for widen factor k,
(depth - 4) / 6 blocks per stage at strides 1/2/2, final BN + ReLU, global average pool and a
linear head. Init: conv weights normal(0, sqrt(2 / (kh*kw*out_channels))), BN weight 1 / bias 0,
Linear bias 0. Module names follow TRADES. ``wrn_34_10`` keeps TRADES' ``sub_block1``, built
but never used in ``forward``, so TRADES checkpoints load unchanged. Counts for 10 classes: the
published 46.16 M (46,160,474) is what ``forward`` uses; with the idle ``sub_block1`` (2,102,112)
``parameters()`` holds 48.26 M. ``wrn_28_10`` is the plain reference network (36,479,194 = 36.48 M).
``AdaptiveAvgPool2d(1)`` replaces ``avg_pool2d(out, 8)`` (equal at 32x32) so 64x64 inputs work.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.models import ModelParams
from bench.models.blocks import PreActivationBlock
from bench.registry import MODELS


class BasicBlock(PreActivationBlock):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(cin, cout, stride)
        self.convShortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def project(self, act: torch.Tensor) -> torch.Tensor | None:
        return None if self.convShortcut is None else self.convShortcut(act)


class NetworkBlock(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        blocks = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_ch: int, sub_block: bool) -> None:
        super().__init__()
        assert (depth - 4) % 6 == 0, "WideResNet depth must be 6n + 4"
        n, ch = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_ch, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        if sub_block:  # TRADES: parameters exist, forward never uses them
            self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(torch.relu(self.bn1(out))).flatten(1))


@MODELS.register("wrn_34_10", params=ModelParams, version=1)
def wrn_34_10(p: ModelParams, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """WideResNet-34-10 (TRADES definition), 32x32 or 64x64 (46.16 M used + 2.10 M idle sub_block1)."""
    return WideResNet(34, 10, num_classes, shape[0], sub_block=True)


@MODELS.register("wrn_28_10", params=ModelParams, version=1)
def wrn_28_10(p: ModelParams, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """WideResNet-28-10 (TRADES block definition, no unused sub-block), 32x32 or 64x64 (36.48 M)."""
    return WideResNet(28, 10, num_classes, shape[0], sub_block=False)
