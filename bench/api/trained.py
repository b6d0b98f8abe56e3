"""``bench.trained_models(suite)``: the models a suite trained, with the test examples it evaluates them on.

For your own adaptive attack: run it on each model and save its adversarial examples where the suite's
external column expects them (``- external: {path: adaptive/{row}-seed{seed}.pt}``,
``bench/suite/columns.py``); the next ``bench run`` evaluates them as a column of the worst case::

    for m in bench.trained_models("suites/threats/fashion-mnist.yaml"):
        x_adv = my_attack(m.model, m.x, m.y, m.threat.eps_float)
        torch.save({"ids": m.ids, "x_adv": x_adv.cpu()}, m.external_file("adaptive"))

Only rows whose training is in the cache are given (``bench run`` first); zoo and ``checkpoints:`` rows
are given too. Nothing is trained or written here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.errors import BenchError
from bench.core.files import default_cache_dir
from bench.core.progress import Progress
from bench.data.loader import to_unit
from bench.device.env import resolve_device
from bench.engine.store import Store
from bench.engine.worker import WorkerContext
from bench.plan.expand import expand
from bench.plan.kinds import TRAIN
from bench.suite.columns import row_file
from bench.suite.load import load_suite
from bench.suite.specs import Suite
from bench.types import ThreatModel


@dataclass(frozen=True)
class TrainedModel:
    """One set of weights a suite evaluates (a leaderboard row and seed), in eval mode on the device."""

    row: str  # the leaderboard row ("pgd_at", "pgd_at+wa", a zoo or checkpoints row)
    seed: int
    model: nn.Module  # takes [0, 1] images, returns logits
    ids: torch.Tensor  # the evaluated test ids (int64)
    x: torch.Tensor  # their images, float32 in [0, 1], on the device
    y: torch.Tensor  # their labels, on the device
    threat: ThreatModel  # the suite's
    files: dict[str, Path] = field(
        default_factory=dict
    )  # external column -> the file the suite expects for this row and seed

    def external_file(self, column: str) -> Path:
        """Where the suite's per-row external column ``column`` reads this row's adversarial examples (its folder made)."""
        if column not in self.files:
            known = ", ".join(self.files) or "none"
            raise BenchError(
                f"no per-row external column {column!r} (with {{row}} or {{seed}} in its path); the suite's: {known}"
            )
        self.files[column].parent.mkdir(parents=True, exist_ok=True)
        return self.files[column]


def trained_models(
    suite: str | Path | Suite, *, cache_dir: str | Path | None = None, device: str | torch.device = "auto",
    data_dir: str | Path | None = None, limit: int | None = None, overrides: Any = None,
) -> Iterator[TrainedModel]:  # fmt: skip
    """The suite's trained models (in the cache at ``cache_dir``), one per leaderboard row and seed, with the test
    examples the suite evaluates (``limit``: as ``bench run --limit``). Rows not trained yet are left out."""
    suite = suite if isinstance(suite, Suite) else load_suite(suite, overrides)
    plan = expand(suite, limit)
    store = Store(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    on = device if isinstance(device, torch.device) else resolve_device(device)
    ctx = WorkerContext(plan, store, on, str(Path(data_dir).expanduser()) if data_dir else None, Progress(False))
    ids, x, y = ctx.test_data()
    templates = [e for e in suite.externals if e.template]
    seen: set[tuple[str, int]] = set()
    for job in plan.eval_jobs:
        if (job.display, job.seed) in seen or not (job.weights.external or store.has(TRAIN.name, job.train_key)):
            continue
        seen.add((job.display, job.seed))
        files = {e.label: row_file(e, job.display, job.seed) for e in templates}
        model = ctx.load_model(job.weights).eval()
        yield TrainedModel(job.display, job.seed, model, torch.from_numpy(ids), to_unit(x), y, suite.threat, files)
