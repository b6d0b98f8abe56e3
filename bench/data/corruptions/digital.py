"""Digital corruptions (Hendrycks & Dietterich 2019; ``make_cifar_c.py`` parameters for CIFAR).

* ``brightness``: + c on the HSV value channel, clipped (c = .05, .1, .15, .2, .3). With hue and
  saturation kept, every channel of a pixel scales by V'/V (V = its largest channel), a black pixel
  becomes grey V': the exact result of the script's ``rgb2hsv`` / ``hsv2rgb`` round trip.
* ``contrast``: (x - m) c + m with m each channel's mean over the image (c = .75, .5, .4, .3, .15).
* ``elastic_transform``: a random affine warp (three points moved by U(-a, a), bilinear,
  reflect-101 borders as ``cv2.warpAffine``), then a displacement field of Gaussian-smoothed U(-1, 1)
  noise (std s, truncated at 3 s, mirrored borders) times alpha, sampled bilinearly with mirrored
  borders as ``scipy.ndimage.map_coordinates(order=1, mode='reflect')``; (alpha, s, a) are the
  script's fractions of the image size: (0, 0, .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05),
  (.1, .03, .03) (so they follow the size rule by construction).
* ``pixelate``: Pillow BOX resize to int(c H) x int(c W) and back (c = .95, .9, .85, .75, .65).
* ``jpeg_compression``: a Pillow JPEG round trip at quality 80, 65, 58, 50, 40.

The last two run Pillow itself (the operations are defined by it), on the image rounded to uint8
(exact for the uint8 test images); they need the optional ``pillow`` dependency.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

from bench.core.errors import BenchError
from bench.data.corruptions import per_sample
from bench.data.corruptions.blur import gaussian_kernel
from bench.registry import CORRUPTIONS

BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
ELASTIC = ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
JPEG_QUALITY = (80, 65, 58, 50, 40)


@CORRUPTIONS.register("brightness", version=1, family="digital")
def brightness(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """HSV value + .05 to .3 (CIFAR-10-C); deterministic."""
    c = BRIGHTNESS[severity - 1]
    v = x.amax(1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v2 / v.clamp_min(1e-12), v2.expand_as(x)).clamp_(0, 1)


@CORRUPTIONS.register("contrast", version=1, family="digital")
def contrast(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Contrast scaled by .75 to .15 around each channel's mean (CIFAR-10-C); deterministic."""
    c = CONTRAST[severity - 1]
    m = x.mean((2, 3), keepdim=True)
    return ((x - m) * c + m).clamp_(0, 1)


def symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad the last two dims by ``r`` mirroring with the edge repeated (SciPy's ``reflect``: d c b a | a b c d)."""
    for dim in (-1, -2):
        n = x.shape[dim]
        k = min(r, n)
        lo, hi = x.narrow(dim, 0, k).flip(dim), x.narrow(dim, n - k, k).flip(dim)
        x = torch.cat([lo, x, hi], dim)
    return x


def smooth(noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """``skimage.filters.gaussian(noise, sigma, mode='reflect', truncate=3)`` for N x H x W fields."""
    r = int(3 * sigma + 0.5)
    if sigma <= 0 or r == 0:
        return noise
    k = gaussian_kernel(sigma, r)
    y = symmetric_pad(noise[:, None], r)
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return F.conv2d(y, k.view(1, 1, 1, -1))[:, 0]


def affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """N x 2 x 3 matrices taking the three ``src`` points to ``dst`` (``cv2.getAffineTransform``)."""
    ones = torch.ones(*src.shape[:2], 1, dtype=src.dtype)
    a = torch.cat([src, ones], 2)  # N x 3 x 3
    return torch.linalg.solve(a, dst).transpose(1, 2)


def sample(x: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor, centres: bool) -> torch.Tensor:
    """Bilinear samples of ``x`` at pixel coordinates (N x H x W each); borders mirrored about the edge
    pixels' centres (``centres``: reflect-101) or about the image edge (SciPy's ``reflect``)."""
    h, w = x.shape[-2:]
    if centres:
        grid = torch.stack([2 * cols / max(w - 1, 1) - 1, 2 * rows / max(h - 1, 1) - 1], -1)
    else:
        grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], -1)
    return F.grid_sample(x, grid.float(), mode="bilinear", padding_mode="reflection", align_corners=centres)


@CORRUPTIONS.register("elastic_transform", version=1, family="digital")
def elastic_transform(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Random affine warp then a smooth random displacement field (CIFAR-10-C)."""
    n, _, h, w = x.shape
    size = min(h, w)
    alpha, sigma, shift = (f * size for f in ELASTIC[severity - 1])
    draws = per_sample(seeds, lambda g: torch.rand(6 + 2 * h * w, generator=g, dtype=torch.float64) * 2 - 1)
    centre = torch.tensor([w // 2, h // 2], dtype=torch.float64)  # (x, y)
    sq = size // 3
    src = torch.stack([centre + sq, torch.stack([centre[0] + sq, centre[1] - sq]), centre - sq])[None].expand(n, 3, 2)
    dst = src + draws[:, :6].view(n, 3, 2) * shift
    inverse = affine_from_points(dst, src)  # warpAffine samples the source at M^-1 (output pixel)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = torch.stack([xx, yy, torch.ones_like(xx)], -1).view(1, -1, 3)
    mapped = (pts @ inverse.transpose(1, 2)).view(n, h, w, 2)
    warped = sample(x, mapped[..., 0], mapped[..., 1], centres=True)
    dx = smooth(draws[:, 6 : 6 + h * w].view(n, h, w).float(), sigma) * alpha
    dy = smooth(draws[:, 6 + h * w :].view(n, h, w).float(), sigma) * alpha
    return sample(warped, xx + dx, yy + dy, centres=False).clamp_(0, 1)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise BenchError("corruptions pixelate and jpeg_compression need Pillow: pip install pillow") from None
    return Image


def _each_pil(x: torch.Tensor, op) -> torch.Tensor:
    image = _pillow()
    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for a in u8:
        img = image.fromarray(a[..., 0] if a.shape[-1] == 1 else a, mode="L" if a.shape[-1] == 1 else "RGB")
        res = np.asarray(op(img, image), dtype=np.uint8)
        out.append(res.reshape(a.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


@CORRUPTIONS.register("pixelate", version=1, family="digital")
def pixelate(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Pillow BOX downscale to .95 to .65 of the size and back (CIFAR-10-C); deterministic."""
    c = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    return _each_pil(x, lambda img, im: img.resize((int(w * c), int(h * c)), im.BOX).resize((w, h), im.BOX))


def _jpeg(img, quality: int):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    from PIL import Image

    return Image.open(buf).convert(img.mode)


@CORRUPTIONS.register("jpeg_compression", version=1, family="digital")
def jpeg_compression(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """A Pillow JPEG round trip at quality 80 to 40 (CIFAR-10-C); deterministic."""
    q = JPEG_QUALITY[severity - 1]
    return _each_pil(x, lambda img, im: _jpeg(img, q))
