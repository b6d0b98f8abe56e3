"""Device-resident batching: whole splits live on the device as uint8, augmentation is batched.

Random choices (order, crop offsets, flips) come from a CPU generator so a seed gives the same
batches on every device; only small index tensors cross to the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded hold-out split (``np.random.seed(seed); permutation(n)`` as the FR code does)."""
    perm = np.random.RandomState(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[: n - n_val]), np.sort(perm[n - n_val :])


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]."""
    return x.float().div_(255.0)


def augment(x: torch.Tensor, crop_padding: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip, applied in one batched op."""
    b, c, h, w = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[bi, ci, rows, cols]
    if flip:
        mask = (torch.rand((b,), generator=g) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    g: torch.Generator | None = None,
    crop_padding: int = 0,
    flip: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Float [0,1] batches from uint8 device tensors; the last batch may be smaller (no drop_last)."""
    n = x.shape[0]
    order = torch.randperm(n, generator=g).to(x.device) if shuffle else None
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        xb = to_unit(x[idx])
        if crop_padding or flip:
            assert g is not None, "augmentation needs a generator"
            xb = augment(xb, crop_padding, flip, g)
        yield xb, y[idx]
