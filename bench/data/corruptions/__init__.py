"""Common corruptions, generated: the 15 of Hendrycks & Dietterich (ICLR 2019, arXiv 1903.12261).

Definitions and per-severity parameters: the authors' CIFAR-10-C generator,
``hendrycks/robustness`` ``ImageNet-C/create_c/make_cifar_c.py`` (32x32 images), written here in
torch (and Pillow for the two operations defined by Pillow: ``pixelate`` and ``jpeg_compression``).
Each module docstring states where ours differs from that script. Why not the ``imagecorruptions``
package (1.1.2, the last release): it carries the ImageNet-C parameters (e.g. Gaussian noise
sigma 0.08..0.38 where CIFAR-10-C uses 0.04..0.10), needs opencv-python and scikit-image, imports
``pkg_resources`` (absent with the setuptools 84 of our environment: the import fails) and the
deprecated ``scipy.ndimage.interpolation`` (a DeprecationWarning, an error under our tests' warning
filter), and draws from NumPy's global RNG, so per-sample seeding would mean reseeding it around
every image.

A corruption is a plug-in like an attack: ``CORRUPTIONS.register(name, version=...)`` on a function
``fn(x, severity, seeds) -> x'`` where ``x`` is float32 N x C x H x W in [0, 1], ``severity`` in 1..5
and ``seeds`` one int per image; it returns float32 in [0, 1]. Randomness comes only from
``torch.Generator``s seeded per image, so an image's corruption does not depend on its batch.

Image sizes: the parameters are the CIFAR ones (32 x 32). For a larger image, lengths in pixels
(blur radii and sigmas, glass-blur displacement, motion-blur length, snow streak length) are
multiplied by ``scale = min(H, W) / 32`` (:func:`pixel_scale`); ratios (noise levels, zoom factors,
pixelation factor, JPEG quality, contrast and brightness) stay as they are. Images of 32 px or less
keep the CIFAR lengths (scale 1): Fashion-MNIST's 28 x 28 is 12 % smaller, and the discrete kernels
(a disk of radius 1 px, swaps 1 px away) cannot shrink by 12 % (a radius-0.875 disk is one pixel:
defocus severity 4 would become the identity). The elastic transform's parameters are fractions of
the image size in the script itself and follow the size exactly. Tiny ImageNet (64 x 64) gets 2 x
the CIFAR lengths. Tiny-ImageNet-C was released
with its own parameter table (``make_tinyimagenet_c.py``), which this rule does not reproduce: use the
released files to compare with published Tiny-ImageNet-C numbers. Grey images (C = 1) are treated as
one channel throughout (their HSV value is the pixel; their grey level for snow is the pixel).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from bench.registry import CORRUPTIONS

SEVERITIES = (1, 2, 3, 4, 5)
# the benchmark's 15, in the paper's order (noise, blur, weather, digital)
NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip


def pixel_scale(h: int, w: int) -> float:
    """The factor on the CIFAR lengths in pixels for an h x w image: min(h, w) / 32, at least 1."""
    return max(1.0, min(h, w) / 32)


def sample_seed(name: str, severity: int, sample_id: int) -> int:
    """The seed of one image's corruption: a hash of (corruption, severity, test id), independent of the batch."""
    digest = hashlib.sha256(f"bench-corruption/{name}/{severity}/{int(sample_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def per_sample(seeds: Sequence[int], draw) -> torch.Tensor:
    """``draw(generator)`` for each image's own generator, stacked along a new first dimension."""
    return torch.stack([draw(g) for g in generators(seeds)])


def corrupt(name: str, images: torch.Tensor, severity: int, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``images`` (N x C x H x W, uint8 or float in [0, 1]) under corruption ``name`` at ``severity``,
    image i seeded by ``ids[i]`` (its test id). The dtype is kept: uint8 in, uint8 out (rounded, as the
    released files are stored); float in, the same float dtype out."""
    entry = CORRUPTIONS.get(name)
    if severity not in SEVERITIES:
        raise ValueError(f"corruption {name}: severity {severity!r}: expected 1 to 5")
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    if images.dim() != 4 or len(ids) != len(images):
        raise ValueError(f"corruption {name}: expected N x C x H x W images and N ids, got {tuple(images.shape)} and {len(ids)}")
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if len(x) == 0:
        return images.clone()
    out = entry.fn(x, severity, [sample_seed(name, severity, i) for i in ids]).clamp_(0.0, 1.0)
    if images.dtype == torch.uint8:
        return (out * 255).round_().to(torch.uint8)
    return out.to(images.dtype)


from bench.data.corruptions import blur, digital, noise, weather  # noqa: E402,F401  (register on import)
