"""Sample-sharded evaluation: one long attack (AutoAttack on 10,000 images) as N tasks.

An attack entry with ``shards: N`` splits each of its evaluations into N shard tasks, each a
contiguous run of whole batches of the evaluated examples (sizes differ by at most one batch), run
anywhere and stored as ``shard/<key>`` with the per-sample flags of its examples. The evaluation
task then merges them by sample id into the same ``eval`` entry an unsharded run writes.

Randomness: batch ``b`` of a sharded evaluation draws from ``torch.manual_seed(seed(eval key, b))``,
so its flags do not depend on how many shards there are or where each ran (tested). An unsharded evaluation
seeds once and runs its batches in order, so for attacks that draw random numbers (PGD's random
start) the two differ like two seeds do; for deterministic ones (FGSM, PGD with ``init: none``,
AutoAttack, which seeds itself on every call) they are identical. ``shards`` is therefore part of
the evaluation's key when it is above 1, and an unsharded evaluation's key is unchanged.
"""

from __future__ import annotations

import numpy as np

from bench.core.errors import BenchError
from bench.plan import keys


def shard_batches(n: int, batch_size: int, count: int, index: int) -> range:
    """The batches (indices into ``range(0, n, batch_size)``) of shard ``index`` of ``count``."""
    batches = -(-n // batch_size)
    bounds = np.linspace(0, batches, count + 1).round().astype(int)
    return range(int(bounds[index]), int(bounds[index + 1]))


def batch_seeds(shard_spec: dict, batches: range) -> list[int]:
    """One seed per batch: a function of the evaluation (whatever its shard count) and the batch index only."""
    spec = {k: v for k, v in shard_spec.items() if k != "shard"}
    spec["attack"] = {k: v for k, v in spec["attack"].items() if k != "shards"}
    base = keys.digest(spec)
    return [int(keys.digest({"eval": base, "batch": b})[:8], 16) for b in batches]


def merge(parts: list[dict[str, np.ndarray]], expected: np.ndarray, label: str) -> dict[str, np.ndarray]:
    """The shards' per-sample flags in sample-id order; every expected id exactly once."""
    ids = np.concatenate([p["sample_id"] for p in parts])
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.sort(expected)):
        raise BenchError(f"{label}: the shards do not cover the evaluated examples exactly once; re-run the shards")
    return {name: np.concatenate([p[name] for p in parts])[order] for name in ("sample_id", "clean", "robust")}
