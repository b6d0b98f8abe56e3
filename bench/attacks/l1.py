"""The L1 geometry for the PGD family: sparse steepest-ascent steps and the exact L1-ball-and-box projection.

Definitions followed:

* Step (Tramèr & Boneh, "Adversarial training and robustness for multiple perturbations",
  NeurIPS 2019, arXiv 1904.13000, SLIDE; Croce & Hein, "Mind the box: l1-APGD for sparse adversarial
  attacks on image classifiers", ICML 2021, arXiv 2103.01208): the steepest-ascent direction of the
  L1 norm is a single coordinate; SLIDE moves along the top ``top`` fraction of gradient coordinates
  (by magnitude) by their sign, scaled to unit L1 norm. As in L1-APGD, coordinates that sit on the
  [0,1] box and whose gradient points out of it are left out before choosing the top fraction (they
  cannot move, and would waste the step's L1 budget).
* Projection: the exact Euclidean projection onto {x : ||x - x0||_1 <= eps, 0 <= x <= 1}. With
  d = z - x0 and per-coordinate room b_i (1 - x0_i if d_i > 0 else x0_i), the KKT conditions give
  delta_i = sign(d_i) * min(max(|d_i| - lam, 0), b_i) with lam = 0 if that is already inside the ball,
  else the lam >= 0 at which sum_i |delta_i| = eps (a piecewise-linear decreasing function of lam),
  found exactly in float64 by sorting its breakpoints (O(n log n) per image).
  (The same problem as ``L1_projection`` in fra31/auto-attack, written here from the KKT conditions.)
* Random start: a Laplace direction scaled to L1 radius eps * U(0, 1), then projected (box).
"""

from __future__ import annotations

import torch

DEFAULT_TOP = 0.01  # SLIDE's 99th percentile: the top 1% of coordinates move each step


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), -1)


def l1_norms(delta: torch.Tensor) -> torch.Tensor:
    return _rows(delta).abs().sum(1)


def project_l1_box(z: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """The Euclidean projection of each ``z[i]`` onto the L1 ball of radius ``eps`` around ``x0[i]`` intersected with [0,1]."""
    x0d = _rows(x0).double()
    d = _rows(z).double() - x0d
    room = torch.where(d > 0, 1.0 - x0d, x0d).clamp_min(0.0)
    mag = d.abs()
    lam = _threshold(mag, room, eps)
    delta = d.sign() * torch.minimum((mag - lam[:, None]).clamp_min(0.0), room)
    out = (x0d + delta).clamp_(0.0, 1.0)
    return out.to(z.dtype).view_as(z)


def _threshold(mag: torch.Tensor, room: torch.Tensor, eps: float) -> torch.Tensor:
    """Per row, the lam >= 0 with sum_i min(max(mag_i - lam, 0), room_i) = eps (0 when that sum at 0 is <= eps).

    The sum is piecewise linear in lam, decreasing, with breakpoints at mag_i (a coordinate starts to
    move) and mag_i - room_i (it reaches its room): sorted, its values at every breakpoint are a cumulative
    sum of slope x gap, and lam is the linear interpolation on the piece where it crosses eps.
    """
    n = len(mag)
    inside = torch.minimum(mag, room).sum(1) <= eps
    points = torch.cat([mag, mag - room], 1)
    signs = torch.cat([torch.ones_like(mag), -torch.ones_like(mag)], 1)
    t, order = points.sort(1, descending=True)
    slope = signs.gather(1, order).cumsum(1)  # coordinates moving just below each breakpoint
    gaps = t[:, :-1] - t[:, 1:]
    value = torch.cat([torch.zeros(n, 1, dtype=t.dtype, device=t.device), (slope[:, :-1] * gaps).cumsum(1)], 1)
    k = (value >= eps).double().argmax(1).clamp_min(1)  # first breakpoint where the sum reaches eps
    rows = torch.arange(n, device=t.device)
    lam = t[rows, k] + (value[rows, k] - eps) / slope[rows, k - 1].clamp_min(1)
    reached = (value >= eps).any(1)  # not reached: over eps at lam = 0 by rounding only
    return torch.where(inside | ~reached, torch.zeros_like(lam), lam.clamp_min(0.0))


def sparse_direction(grad: torch.Tensor, x: torch.Tensor | None = None, top: float = DEFAULT_TOP) -> torch.Tensor:
    """Unit-L1 ascent direction: the sign of the top ``top`` fraction of gradient coordinates, each 1/k;
    with the current point ``x``, coordinates on the box whose gradient points out of it are left out."""
    g = _rows(grad)
    score = g.abs()
    if x is not None:
        xr = _rows(x)
        score = score.masked_fill(((xr <= 0) & (g < 0)) | ((xr >= 1) & (g > 0)), 0.0)
    k = max(1, round(top * g.shape[1]))
    idx = score.topk(k, dim=1).indices
    e = torch.zeros_like(g)
    e.scatter_(1, idx, g.gather(1, idx).sign())
    count = e.abs().sum(1, keepdim=True).clamp_min(1.0)
    return (e / count).view_as(grad)


def random_start(x0: torch.Tensor, eps: float) -> torch.Tensor:
    """A random point in the L1 ball around ``x0`` (Laplace direction, radius eps * U(0,1)), inside [0,1]."""
    noise = torch.empty_like(x0).exponential_() * (torch.rand_like(x0) - 0.5).sign()  # Laplace(0, 1)
    radius = torch.rand(len(x0), device=x0.device, dtype=x0.dtype) * eps
    scale = radius / l1_norms(noise).clamp_min(1e-12)
    return project_l1_box(x0 + noise * scale.view(-1, *([1] * (x0.dim() - 1))), x0, eps)
