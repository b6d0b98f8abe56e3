"""Blur corruptions (Hendrycks & Dietterich 2019; ``make_cifar_c.py`` parameters for CIFAR).

* ``defocus_blur``: correlation with an anti-aliased disk (radius r; a 17 x 17 support, the disk
  smoothed by a 3 x 3 Gaussian of std a, as ``cv2.GaussianBlur``), reflect-101 borders (OpenCV's
  default); (r, a) = (.3, .4), (.4, .5), (.5, .6), (1, .2), (1.5, .1).
* ``glass_blur``: Gaussian blur (std s, truncated at 4 s, edge-replicate borders as
  ``skimage.filters.gaussian``), quantised to uint8 by truncation as the script does, then ``it``
  sweeps of local pixel swaps (every pixel from the bottom-right corner inwards swapped with one
  at offset in [-d, d - 1]^2, as ``np.random.randint(-d, d)`` draws), then blurred again;
  (s, d, it) = (.05, 1, 1), (.25, 1, 1), (.4, 1, 1), (.25, 1, 2), (.4, 1, 2).
* ``motion_blur``: ImageMagick's ``MotionBlurImage`` as the script calls it through Wand (radius R,
  sigma S, angle U(-45, 45) degrees): a one-sided Gaussian line kernel of 2 ceil(R) + 1 taps,
  weights exp(-i^2 / 2 S^2), at integer offsets round(i cos t), round(i sin t), edge-replicate
  borders. Written from ImageMagick's ``effect.c`` (not run against it: Wand needs the ImageMagick C
  library); (R, S) = (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5).
* ``zoom_blur``: the mean of the image and its centre crops zoomed back by factors 1, 1.01, ...
  (up to 1.06, 1.11, 1.15, 1.20, 1.25: the script's ``np.arange`` lists), bilinear with aligned
  corners as ``scipy.ndimage.zoom(order=1)``.

Lengths in pixels scale with ``pixel_scale`` (module ``bench.data.corruptions``); zoom factors do not.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.data.corruptions import per_sample, pixel_scale
from bench.registry import CORRUPTIONS

DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))
GLASS = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
MOTION = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))
# the script's np.arange(1, m, 0.01) for m = 1.06, 1.11, 1.16, 1.21, 1.26 has 7, 12, 16, 21, 26 factors
# (floating point keeps 1.06 and 1.11 in): zooms 1.00 .. 1.06, 1.11, 1.15, 1.20, 1.25
ZOOM_COUNT = (7, 12, 16, 21, 26)


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    i = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (i / sigma) ** 2) if sigma > 0 else (i == 0).double()
    return (k / k.sum()).float()


def separable(x: torch.Tensor, k: torch.Tensor, mode: str) -> torch.Tensor:
    """``x`` (N x C x H x W) correlated with ``k`` along H then W, each channel on its own."""
    r = (len(k) - 1) // 2
    if r == 0:
        return x.clone()
    c = x.shape[1]
    rows = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(rows, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate") -> torch.Tensor:
    """``skimage.filters.gaussian`` / ``scipy.ndimage.gaussian_filter``: radius int(truncate sigma + 0.5)."""
    return separable(x, gaussian_kernel(sigma, int(truncate * sigma + 0.5)), mode)


def disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The anti-aliased disk of the script's ``disk``: a 0/1 disk, normalised, smoothed by a 3 x 3 Gaussian."""
    half = 8 if radius <= 8 else math.ceil(radius)
    i = torch.arange(-half, half + 1, dtype=torch.float64)
    d = ((i[:, None] ** 2 + i[None, :] ** 2) <= radius**2).double()
    d = (d / d.sum())[None, None].float()
    return separable(d, gaussian_kernel(alias_blur, 1), "reflect")[0, 0]


@CORRUPTIONS.register("defocus_blur", version=1, family="blur")
def defocus_blur(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Defocus: correlation with an anti-aliased disk of radius .3 to 1.5 px (CIFAR-10-C)."""
    s = pixel_scale(*x.shape[-2:])
    radius, alias = DEFOCUS[severity - 1]
    k = disk(radius * s, alias * s)
    r, c = (len(k) - 1) // 2, x.shape[1]
    pad = F.pad(x, (r, r, r, r), mode="reflect" if r < min(x.shape[-2:]) else "replicate")
    return F.conv2d(pad, k[None, None].repeat(c, 1, 1, 1), groups=c).clamp_(0, 1)


def _swap_sweeps(x: torch.Tensor, offsets: torch.Tensor, d: int) -> torch.Tensor:
    """The script's local shuffle, every image its own offsets (N x it x rows x cols x 2: dy, dx)."""
    n, _, h, w = x.shape
    idx = torch.arange(n)
    for it in range(offsets.shape[1]):
        for a, row in enumerate(range(h - d, d, -1)):
            for b, col in enumerate(range(w - d, d, -1)):
                r2, c2 = row + offsets[:, it, a, b, 0], col + offsets[:, it, a, b, 1]
                here, there = x[idx, :, row, col].clone(), x[idx, :, r2, c2].clone()
                x[idx, :, row, col] = there
                x[idx, :, r2, c2] = here
    return x


@CORRUPTIONS.register("glass_blur", version=1, family="blur")
def glass_blur(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Glass: blur, local pixel swaps, blur (CIFAR-10-C)."""
    h, w = x.shape[-2:]
    s = pixel_scale(h, w)
    sigma, d, iterations = GLASS[severity - 1]
    sigma, d = sigma * s, max(1, round(d * s))
    y = torch.floor(gaussian_blur(x, sigma) * 255) / 255  # np.uint8(... * 255): truncation
    shape = (iterations, max(h - 2 * d, 0), max(w - 2 * d, 0), 2)
    offsets = per_sample(seeds, lambda g: torch.randint(-d, d, shape, generator=g))
    return gaussian_blur(_swap_sweeps(y, offsets, d), sigma).clamp_(0, 1)


def motion_taps(radius: float, sigma: float, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights (taps) and integer offsets (N x taps, rows and columns) of ImageMagick's motion-blur kernel."""
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = (k / k.sum()).float()
    t = torch.deg2rad(angle.double())[:, None]
    cols = torch.ceil(i * torch.cos(t) - 0.5).long()  # offset.x = ceil(i point.y / |point| - 0.5)
    rows = torch.ceil(i * torch.sin(t) - 0.5).long()
    return k, rows, cols


def motion(x: torch.Tensor, radius: float, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """Each image blurred along its own ``angle`` (degrees), edge pixels replicated."""
    n, _, h, w = x.shape
    k, rows, cols = motion_taps(radius, sigma, angle)
    out = torch.zeros_like(x)
    idx = torch.arange(n)[:, None, None]
    hh, ww = torch.arange(h), torch.arange(w)
    for j in range(len(k)):
        r = (hh[None, :] + rows[:, j : j + 1]).clamp(0, h - 1)[:, :, None]
        c = (ww[None, :] + cols[:, j : j + 1]).clamp(0, w - 1)[:, None, :]
        out += k[j] * x.permute(0, 2, 3, 1)[idx, r, c].permute(0, 3, 1, 2)
    return out


@CORRUPTIONS.register("motion_blur", version=1, family="blur")
def motion_blur(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Motion blur of 13 to 19 taps along a random angle in (-45, 45) degrees (CIFAR-10-C, via ImageMagick)."""
    s = pixel_scale(*x.shape[-2:])
    radius, sigma = MOTION[severity - 1]
    angle = per_sample(seeds, lambda g: torch.rand((), generator=g, dtype=torch.float64) * 90 - 45)
    return motion(x, radius * s, sigma * s, angle).clamp_(0, 1)


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The centre crop of ``x`` that ``factor`` magnifies back to its size (``scipy.ndimage.zoom(order=1)``), trimmed."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    oh, ow = round(ch * factor), round(cw * factor)
    z = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)
    th, tw = (oh - h) // 2, (ow - w) // 2
    return z[..., th : th + h, tw : tw + w]


def zoom_factors(severity: int) -> list[float]:
    return [1 + 0.01 * i for i in range(ZOOM_COUNT[severity - 1])]


@CORRUPTIONS.register("zoom_blur", version=1, family="blur")
def zoom_blur(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Zoom blur: the image averaged with its zooms up to 1.06 to 1.25 (CIFAR-10-C); deterministic."""
    factors = zoom_factors(severity)
    out = x.clone()
    for f in factors:
        out += clipped_zoom(x, f)
    return (out / (len(factors) + 1)).clamp_(0, 1)
