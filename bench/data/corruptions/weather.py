"""Weather corruptions (Hendrycks & Dietterich 2019; ``make_cifar_c.py`` parameters for CIFAR).

* ``fog``: x + c plasma, rescaled by max(x) / (max(x) + c), clipped; the plasma is the script's
  diamond-square fractal (``plasma_fractal``: a 32 x 32 map, each level's offsets
  ``wibble * U(-wibble, wibble)`` with wibble divided by ``decay`` per level, min-max normalised);
  (c, decay) = (.2, 3), (.5, 3), (.75, 2.5), (1, 2), (1.5, 1.75). Other sizes: the map is the next
  power of two at least as large as the image, cropped.
* ``snow``: a layer N(loc, scale^2) per pixel, zoomed by ``zoom`` (``clipped_zoom``), zeroed below
  ``thr``, quantised to uint8, motion-blurred (radius R, sigma S, angle U(-135, -45) degrees; our
  ImageMagick kernel of ``blur.motion``); the image is first brightened to
  b x + (1 - b) max(x, 1.5 grey(x) + .5) (grey: 0.299 R + 0.587 G + 0.114 B, the pixel itself when
  grey), then the layer and its 180-degree rotation are added, clipped. Parameters
  (loc, scale, zoom, thr, R, S, b): (.1, .2, 1, .6, 8, 3, .95), (.1, .2, 1, .5, 10, 4, .9),
  (.15, .3, 1.75, .55, 10, 4, .9), (.25, .3, 2.25, .6, 12, 6, .85), (.3, .3, 1.25, .65, 14, 12, .8).
* ``frost``: c1 x + c2 F, clipped, (c1, c2) = (1, .2), (1, .3), (.9, .4), (.85, .4), (.75, .45), as the
  script. **F differs**: the script crops one of six frost photographs (shipped with the authors'
  code, not redistributable here); ours is a procedural ice texture per image: a faint plasma haze
  (0.2 + 0.3 plasma) plus about one crystal needle per 24 pixels (straight bright segments of random
  direction, length 2 to H/4 and brightness U(.4, 1), smoothed by a Gaussian of std .5 px), tinted
  pale blue (R, G, B) x (.85, .92, 1) on colour images. It keeps the photographs' role (a bright,
  structured occluder of the same blend weights) but not their statistics: generated frost accuracy is
  not comparable with CIFAR-10-C's frost column; use the released files for that.
"""

from __future__ import annotations

import math

import torch

from bench.data.corruptions import generators, pixel_scale
from bench.data.corruptions.blur import clipped_zoom, gaussian_blur, motion
from bench.registry import CORRUPTIONS

FOG = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))
SNOW = (
    (0.1, 0.2, 1.0, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
)
FROST = ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
FROST_TINT = (0.85, 0.92, 1.0)


def plasma(gens: list[torch.Generator], mapsize: int, decay: float) -> torch.Tensor:
    """The script's ``plasma_fractal`` (diamond-square), one N x mapsize x mapsize map per generator, in [0, 1]."""
    n = len(gens)
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        u = torch.stack([torch.rand(a.shape[1:], generator=g, dtype=torch.float64) for g in gens])
        return a / 4 + wibble * (u * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        acc = corner + corner.roll(-1, 1)
        acc = acc + acc.roll(-1, 2)
        m[:, half::step, half::step] = wibbled(acc)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + dr.roll(1, 1) + ul + ul.roll(-1, 2))
        m[:, half::step, 0::step] = wibbled(dr + dr.roll(1, 2) + ul + ul.roll(-1, 1))
        step //= 2
        wibble /= decay
    m = m - m.amin((1, 2), keepdim=True)
    return (m / m.amax((1, 2), keepdim=True).clamp_min(1e-12)).float()


def map_size(h: int, w: int) -> int:
    return max(32, 1 << math.ceil(math.log2(max(h, w))))


@CORRUPTIONS.register("fog", version=1, family="weather")
def fog(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Fog: a plasma-fractal haze of strength .2 to 1.5 (CIFAR-10-C)."""
    h, w = x.shape[-2:]
    c, decay = FOG[severity - 1]
    haze = plasma(generators(seeds), map_size(h, w), decay)[:, None, :h, :w]
    top = x.amax((1, 2, 3), keepdim=True)
    return ((x + c * haze) * top / (top + c)).clamp_(0, 1)


def grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


@CORRUPTIONS.register("snow", version=1, family="weather")
def snow(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Snow: a thresholded, zoomed, motion-blurred noise layer over a brightened image (CIFAR-10-C)."""
    h, w = x.shape[-2:]
    s = pixel_scale(h, w)
    loc, scale, zoom, thr, radius, sigma, blend = SNOW[severity - 1]
    draws = [(torch.randn(h, w, generator=g), torch.rand((), generator=g, dtype=torch.float64)) for g in generators(seeds)]
    layer = torch.stack([d[0] for d in draws])[:, None] * scale + loc
    angle = torch.stack([d[1] for d in draws]) * 90 - 135
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < thr, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # astype(np.uint8) for the PIL image: truncation
    layer = torch.round(motion(layer, radius * s, sigma * s, angle) * 255) / 255  # decoded back from 8 bits
    bright = blend * x + (1 - blend) * torch.maximum(x, grey(x) * 1.5 + 0.5)
    return (bright + layer + layer.flip(-1, -2)).clamp_(0, 1)


def frost_texture(gens: list[torch.Generator], h: int, w: int, channels: int) -> torch.Tensor:
    """Our procedural frost (module docstring): N x channels x h x w in [0, 1]."""
    n, s = len(gens), pixel_scale(h, w)
    haze = 0.2 + 0.3 * plasma(gens, map_size(h, w), 2.0)[:, :h, :w]
    k = max(1, round(h * w / 24))
    p = torch.stack([torch.rand(k, 5, generator=g, dtype=torch.float64) for g in gens])  # N x k x 5
    y0, x0, theta = p[..., 0] * h, p[..., 1] * w, p[..., 2] * 2 * math.pi
    length = 2 + p[..., 3] * max(h / 4 - 2, 0)
    value = (0.4 + 0.6 * p[..., 4]).float()
    t = torch.linspace(0, 1, max(2, math.ceil(2 * h / 4) + 1), dtype=torch.float64)  # half-pixel steps
    ys = torch.round(y0[..., None] + t * length[..., None] * torch.sin(theta)[..., None]).long()
    xs = torch.round(x0[..., None] + t * length[..., None] * torch.cos(theta)[..., None]).long()
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    flat = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(n, -1)
    vals = torch.where(inside, value[..., None].expand_as(ys), torch.zeros_like(ys, dtype=torch.float32)).view(n, -1)
    canvas = torch.zeros(n, h * w).scatter_reduce_(1, flat, vals, "amax")
    needles = gaussian_blur(canvas.view(n, 1, h, w), 0.5 * s)
    tex = (haze[:, None] + needles).clamp(0, 1)
    if channels == 3:
        tex = tex * torch.tensor(FROST_TINT).view(1, 3, 1, 1)
    return tex.expand(n, channels, h, w)


@CORRUPTIONS.register("frost", version=1, family="weather")
def frost(x: torch.Tensor, severity: int, seeds: list[int]) -> torch.Tensor:
    """Frost: the image blended with an ice texture, weights (1, .2) to (.75, .45) (CIFAR-10-C; procedural texture)."""
    a, b = FROST[severity - 1]
    return (a * x + b * frost_texture(generators(seeds), *x.shape[-2:], x.shape[1])).clamp_(0, 1)

