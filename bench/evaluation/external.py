"""Adversarial examples made outside bench (your own adaptive attack): load a ``.pt`` file and check it.

This is how an evaluation bench cannot express joins the worst case, as RobustBench's outside
submissions of per-image adversarial tensors do (Croce et al., "RobustBench", NeurIPS 2021 Datasets
and Benchmarks, arXiv 2010.09670): the file is trusted for nothing but what is checked here, with the
same eps-ball test and tolerance as every attack bench runs (``bench.attacks.check_adversarial``).

Two layouts, read with ``torch.load(weights_only=True)`` (no code runs on load):

* a float tensor ``N x C x H x W`` of adversarial images in test-id order: one per test image (image i
  is the adversarial version of test image i), or one per evaluated test example (the suite's
  ``eval.n_examples`` subset, in the order of its test ids, as the caller gives them);
* a mapping ``{"ids": LongTensor[N], "x_adv": Tensor[N, C, H, W]}`` for any subset of test ids
  (distinct, in range).

Checked, in this order, each failure one line naming the file and, for a per-image failure, the
first offending index: readable, layout, ids, shape (C x H x W of the test split), floating dtype,
finite, range [0, 1], and the threat model's eps-ball (Linf, L2 or L1) around the clean test image.
The result carries the sha256 of the file's bytes: a column computed from it is keyed by content,
so a changed file is a new column and a byte-identical copy under a new name is not (``torch.save``
records the file's stem inside its archive: the same tensor saved again under another name is
another file, hence another column).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.attacks import TOLERANCE, ball_tolerance, distances
from bench.core.errors import BenchError
from bench.types import ThreatModel


class ExternalError(BenchError):
    """An external adversarial-examples file failed a check; the message names the file."""


@dataclass(frozen=True)
class External:
    x_adv: torch.Tensor  # float32 N x C x H x W in [0, 1]
    ids: torch.Tensor  # int64 test ids, one per row of x_adv
    digest: str  # sha256 of the file's bytes (the column's cache key part)
    max_distance: float  # the largest distance to the clean image in the threat's norm


def _load(path: Path, name: str) -> tuple[Any, str]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ExternalError(f"{name}: cannot read: {e.strerror or e}") from None
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the same user error
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExternalError(f"{name}: not a torch .pt file of tensors ({first})") from None
    return obj, hashlib.sha256(raw).hexdigest()


def _layout(obj: Any, name: str, n_test: int, order: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        if obj.dim() >= 1 and order is not None and len(obj) == len(order):
            return obj, order
        if obj.dim() >= 1 and len(obj) != n_test:
            also = f" or {len(order)} (one per evaluated test example, in test-id order)" if order is not None else ""
            raise ExternalError(
                f"{name}: {len(obj)} images, expected {n_test} (one per test image, in test-id order){also}; "
                "for other test ids save {'ids': LongTensor, 'x_adv': tensor}"
            )
        return obj, torch.arange(len(obj) if obj.dim() else 0)
    if isinstance(obj, dict):
        keys = set(obj)
        if keys != {"ids", "x_adv"}:
            extra = sorted(map(str, keys - {"ids", "x_adv"}))
            what = f"unknown key {extra[0]!r}" if extra else f"missing key {min({'ids', 'x_adv'} - keys)!r}"
            raise ExternalError(f"{name}: {what}; expected a tensor or a mapping {{'ids': LongTensor, 'x_adv': tensor}}")
        ids, x = obj["ids"], obj["x_adv"]
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ExternalError(f"{name}: ids: expected a 1-D integer tensor, got {_what(ids)}")
        if not isinstance(x, torch.Tensor):
            raise ExternalError(f"{name}: x_adv: expected a tensor, got {_what(x)}")
        ids = ids.long()
        bad = ((ids < 0) | (ids >= n_test)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ExternalError(f"{name}: ids[{i}]: test id {int(ids[i])} out of range (the test split has {n_test} images)")
        seen: set[int] = set()
        for i, v in enumerate(ids.tolist()):
            if v in seen:
                raise ExternalError(f"{name}: ids[{i}]: test id {v} appears twice")
            seen.add(v)
        if x.dim() >= 1 and len(x) != len(ids):
            raise ExternalError(f"{name}: x_adv has {len(x)} images for {len(ids)} ids")
        return x, ids
    raise ExternalError(f"{name}: expected a tensor or a mapping {{'ids': LongTensor, 'x_adv': tensor}}, got {_what(obj)}")


def _what(obj: Any) -> str:
    return f"a {obj.dtype} tensor of shape {tuple(obj.shape)}" if isinstance(obj, torch.Tensor) else type(obj).__name__


def load_external(
    path: str | os.PathLike, clean: torch.Tensor, threat: ThreatModel, *, order: Sequence[int] | None = None,
    tol: float = TOLERANCE,
) -> External:  # fmt: skip
    """Load and check the adversarial examples in ``path`` against the clean test images ``clean``.

    ``clean`` is the test split (``N_test x C x H x W``, uint8 or float in [0, 1]); a plain tensor file
    holds one image per test image, or one per test id of ``order`` (the evaluated examples), in that
    order. Raises :class:`ExternalError`.
    """
    path = Path(path)
    name = path.name
    obj, digest = _load(path, name)
    n_test = len(clean)
    x, ids = _layout(obj, name, n_test, None if order is None else torch.as_tensor(list(order), dtype=torch.long))
    label = "x_adv" if isinstance(obj, dict) else "tensor"
    want = (len(ids), *clean.shape[1:])
    if tuple(x.shape) != want:
        raise ExternalError(f"{name}: {label} has shape {tuple(x.shape)}, expected {want} (N x C x H x W of the test split)")
    if not x.dtype.is_floating_point:
        raise ExternalError(f"{name}: {label} has dtype {x.dtype}, expected floating point values in [0, 1]")
    x = x.float()
    ref = clean[ids].float() / 255 if clean.dtype == torch.uint8 else clean[ids].float()
    rows = x.flatten(1)
    checks = (
        (~torch.isfinite(rows).all(1), lambda i: "not finite"),
        ((rows < -tol).any(1) | (rows > 1 + tol).any(1), lambda i: f"outside [0, 1] (values in [{float(x[i].min()):.6g}, {float(x[i].max()):.6g}])"),
    )
    for bad, why in checks:
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ExternalError(f"{name}: x_adv[{i}]: {why(i)}")
    dist = distances(ref, x, threat.norm)
    outside = dist > threat.eps_float + ball_tolerance(threat.eps_float, threat.norm, tol)
    if outside.any():
        i = int(outside.nonzero()[0])
        raise ExternalError(
            f"{name}: x_adv[{i}]: outside the {threat.norm} ball of eps {threat.eps_text} around test image "
            f"{int(ids[i])} (distance {float(dist[i]):.4g})"
        )
    # values within the tolerance past 0 or 1 are clipped, as the evaluator's model sees [0, 1] inputs
    return External(x.clamp_(0.0, 1.0), ids, digest, float(dist.max()) if len(dist) else 0.0)
