"""Model plug-ins. Every model takes [0,1] pixels and normalises inside (``Normalize`` buffers).

A model constructor is ``fn(params, num_classes, shape) -> nn.Module`` on normalised inputs;
:func:`build_model` wraps it with the normalisation layer, so attacks never see normalisation and
eps stays in pixel space. Params dataclasses derive from :class:`ModelParams`.
Adding a model (its contract, ``bench.registry.ModelSpec``, and an example): ``bench/models/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.core import params as params_mod
from bench.core.errors import ConfigError
from bench.registry import MODELS


@dataclass(frozen=True)
class ModelParams:
    normalize: bool = False  # subtract the dataset mean / divide by its std inside the model


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """[0,1] pixels -> Normalize -> network -> logits."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build(
    name: str,
    p: Any,
    num_classes: int,
    shape: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Classifier:
    entry = MODELS.get(name)
    net = entry.fn(p, num_classes, tuple(shape))
    c = shape[0]
    if p.normalize and mean is not None and std is not None:
        return Classifier(net, tuple(mean), tuple(std))
    return Classifier(net, (0.0,) * c, (1.0,) * c)


def build_model(
    name: str,
    num_classes: int | None = None,
    shape: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    **params: Any,
) -> Classifier:
    """Library API: ``bench.build_model("resnet18", num_classes=10, shape=(3, 32, 32))``.

    ``num_classes`` and ``shape`` (channels, height, width) are required: there is no default
    dataset, so a CIFAR model is never silently built for 28x28 grey images. Common values:
    Fashion-MNIST/MNIST ``(1, 28, 28)``, 10; CIFAR-10 ``(3, 32, 32)``, 10; CIFAR-100 ``(3, 32, 32)``,
    100; SVHN ``(3, 32, 32)``, 10; Tiny ImageNet ``(3, 64, 64)``, 200.
    """
    entry = MODELS.get(name)
    if num_classes is None or shape is None:
        missing = " and ".join(n for n, v in (("num_classes", num_classes), ("shape", shape)) if v is None)
        raise ConfigError(
            f"build_model({name!r})", f"give {missing} (e.g. num_classes=10, shape=(3, 32, 32) for CIFAR-10; (1, 28, 28) for Fashion-MNIST)"
        )
    if len(tuple(shape)) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigError(f"build_model({name!r}).shape", f"expected (channels, height, width), got {shape!r}")
    p = params_mod.build(entry.params, params, f"model {name}")
    return build(name, p, num_classes, tuple(shape), mean, std)


def flat_features(features: nn.Module, shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *shape)).flatten(1).shape[1])


from bench.models import preact_resnet, resnet, small_cnn, tiny, wide_resnet  # noqa: F401
