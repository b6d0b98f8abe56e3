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
  else the lam >= 0 at which sum_i |delta_i| = eps (a piecewise-linear decreasing function of lam).
  lam is bracketed by bisection in float64, then solved exactly on the bracket's linear piece.
  (The same problem as ``L1_projection`` in fra31/auto-attack, written here from the KKT conditions.)
* Random start: a Laplace direction scaled to L1 radius eps * U(0, 1), then projected (box).
"""

from __future__ import annotations

import torch

BISECTION_STEPS = 60
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

    def total(lam: torch.Tensor) -> torch.Tensor:
        return torch.minimum((mag - lam[:, None]).clamp_min(0.0), room).sum(1)

    zero = torch.zeros(len(d), dtype=d.dtype, device=d.device)
    inside = total(zero) <= eps
    lo, hi = zero.clone(), mag.amax(1) if d.numel() else zero.clone()
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        over = total(mid) > eps
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    # exact lam on the linear piece at hi: the moving coordinates are those with 0 < |d| - lam < room
    lam = hi
    free = ((mag - lam[:, None]) > 0) & ((mag - lam[:, None]) < room)
    capped = (mag - lam[:, None]) >= room
    n_free = free.sum(1)
    exact = ((mag * free).sum(1) + (room * capped).sum(1) - eps) / n_free.clamp_min(1)
    ok = (n_free > 0) & (exact >= lo - 1e-12) & (exact <= hi + 1e-12)
    lam = torch.where(ok, exact.clamp_min(0.0), hi)
    lam = torch.where(inside, zero, lam)
    delta = d.sign() * torch.minimum((mag - lam[:, None]).clamp_min(0.0), room)
    out = (x0d + delta).clamp_(0.0, 1.0)
    return out.to(z.dtype).view_as(z)


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
