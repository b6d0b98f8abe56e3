"""SmallCNN: the MNIST-family model of robustness work (TRADES ``models/small_cnn.py`` geometry).

conv 1->32->32 (3x3, no padding), max-pool 2, conv 32->64->64, max-pool 2, FC 1024->200->200->C.
``small_cnn`` (harness default, methods.md section 10) puts BatchNorm after each conv and has no
dropout, so BN-mode and WA-BN code paths run on the default dataset; ``small_cnn_trades`` keeps
TRADES' form (no BN, dropout 0.5 after the first FC, zero-initialised last layer). About 0.31 M
parameters at 28x28 with 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.models import ModelParams, flat_features
from bench.registry import MODELS


@dataclass(frozen=True)
class SmallCNNParams(ModelParams):
    pass


def _features(in_ch: int, bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate([(in_ch, 32), (32, 32), (32, 64), (64, 64)]):
        layers.append(nn.Conv2d(cin, cout, 3))
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU())
        if i in (1, 3):
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _small_cnn(num_classes: int, shape: tuple[int, int, int], bn: bool, dropout: float) -> nn.Module:
    features = _features(shape[0], bn)
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(flat_features(features, shape), 200),
        nn.ReLU(),
        nn.Dropout(dropout) if dropout else nn.Identity(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, num_classes),
    )
    return nn.Sequential(features, head)


@MODELS.register("small_cnn", params=SmallCNNParams, version=1)
def small_cnn(p: SmallCNNParams, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """SmallCNN (4 conv + 3 FC) with BatchNorm, no dropout; the Fashion-MNIST default (~0.31 M)."""
    return _small_cnn(num_classes, shape, bn=True, dropout=0.0)


@MODELS.register("small_cnn_trades", params=SmallCNNParams, version=1)
def small_cnn_trades(p: SmallCNNParams, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """TRADES' original SmallCNN: no BatchNorm, dropout 0.5, zero-initialised last layer."""
    model = _small_cnn(num_classes, shape, bn=False, dropout=0.5)
    last = model[1][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return model
