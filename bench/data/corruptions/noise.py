"""Noise corruptions (Hendrycks & Dietterich 2019; ``make_cifar_c.py`` parameters for CIFAR).

* ``gaussian_noise``: x + N(0, c^2) per pixel and channel, clipped; c = .04, .06, .08, .09, .10.
* ``shot_noise``: Poisson(x c) / c, clipped; c = 500, 250, 100, 75, 50 (photons per unit intensity).
* ``impulse_noise``: salt-and-pepper as ``skimage.util.random_noise(mode='s&p')``: each pixel value
  (per channel) is replaced with probability c, by 1 or 0 with equal odds; c = .01, .02, .03, .05, .07.

None has a length in pixels, so none depends on the image size.
"""

from __future__ import annotations

import torch

from bench.data.corruptions import generators, per_sample
from bench.registry import CORRUPTIONS

GAUSSIAN = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT = (500, 250, 100, 75, 50)
IMPULSE = (0.01, 0.02, 0.03, 0.05, 0.07)


@CORRUPTIONS.register("gaussian_noise", version=1, family="noise")
def gaussian_noise(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Additive Gaussian noise of std .04 to .10 (CIFAR-10-C)."""
    c = GAUSSIAN[severity - 1]
    return (x + c * per_sample(seeds, lambda g: torch.randn(x.shape[1:], generator=g))).clamp_(0, 1)


@CORRUPTIONS.register("shot_noise", version=1, family="noise")
def shot_noise(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Poisson (shot) noise at 500 to 50 photons per unit intensity (CIFAR-10-C)."""
    c = SHOT[severity - 1]
    rates = x * c
    return torch.stack([torch.poisson(r, generator=g) for r, g in zip(rates, generators(seeds))]).div_(c).clamp_(0, 1)


@CORRUPTIONS.register("impulse_noise", version=1, family="noise")
def impulse_noise(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Salt-and-pepper noise on 1% to 7% of pixel values (CIFAR-10-C)."""
    c = IMPULSE[severity - 1]
    u = per_sample(seeds, lambda g: torch.rand((2, *x.shape[1:]), generator=g))
    hit, salt = u[:, 0] < c, u[:, 1] < 0.5
    return torch.where(hit, salt.to(x.dtype), x)

