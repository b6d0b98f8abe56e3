"""Evaluation: per-sample clean and robust flags for one (weights, attack) pair.

The model runs in eval mode with its parameters frozen (input-only gradients). Only points that
are classified correctly on clean inputs are attacked (the others count as non-robust), and with
``eval.cascade`` only those no attack to the left broke. Every
returned batch is checked to lie in the eps-ball and in [0,1], and the model's mode must be
unchanged afterwards; predictions on ``x_adv`` are recomputed here in fp32.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.attacks import check_adversarial
from bench.core.errors import EvaluationError
from bench.core.faults import fault_point
from bench.core.files import atomic_write_bytes
from bench.core.modes import frozen_eval
from bench.core.progress import Progress
from bench.data.loader import to_unit
from bench.device.precision import attack_model, autocast
from bench.evaluation.parity import check, parity_slice
from bench.evaluation.randomised import Verdicts

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Flags:
    clean: np.ndarray  # bool per sample
    robust: np.ndarray  # bool per sample (False where clean is False)
    max_dist: float
    seconds: float
    parity: dict[str, Any] | None = None  # a low-precision evaluation's fp32 check (``parity``)
    model_check: dict[str, Any] | None = None  # randomised / probability outputs (``bench/evaluation/randomised.py``)

    @property
    def clean_acc(self) -> float:
        return float(self.clean.mean()) if len(self.clean) else float("nan")

    @property
    def robust_acc(self) -> float:
        return float(self.robust.mean()) if len(self.robust) else float("nan")


EVAL_SAVE_S = float(os.environ.get("BENCH_EVAL_SAVE_S", "60"))  # resume state at most this often


def robust_flags(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: AttackFn,
    eps: float,
    batch_size: int,
    name: str,
    progress: Progress | None = None,
    state: Path | None = None,
    batch_seeds: list[int] | None = None,
    norm: str = "Linf",
    precision: str = "fp32",
    attack_mask: torch.Tensor | None = None,
) -> Flags:
    """Clean and robust flags of ``model`` on uint8 inputs ``x`` under ``attack`` (checked in the ``norm`` ball).

    With ``state`` (a file in the store's partial area), the per-sample flags so far and the RNG
    state are saved every ``EVAL_SAVE_S`` seconds; a killed evaluation resumes from there and gives
    the flags an uninterrupted one gives. With ``batch_seeds`` each batch first seeds the torch RNG
    with its own seed (sharded evaluation: ``bench/plan/shards.py``). ``precision`` (a resolved path:
    ``bench/device/native.py``) is the attack's context: bf16/fp16 autocast (fp16 through the input-gradient
    scaling view, ``bench.device.precision.attack_model``) or TF32; predictions stay fp32. With ``attack_mask`` (bool per sample, on the
    device), only the points it marks are attacked; the others count as not robust (``eval.cascade``:
    the points an earlier attack already broke). The first batch also checks whether the model is
    randomised or outputs probabilities, at the cost of one extra forward pass; a randomised model's
    verdicts are majorities over draws (``bench/evaluation/randomised.py``).
    """
    start = time.perf_counter()
    clean_parts, robust_parts = [], []
    max_dist, done, before = 0.0, 0, 0.0
    saved = _load_eval_state(state, len(x), batch_size)
    if saved is not None:
        clean_parts, robust_parts = [torch.from_numpy(saved["clean"])], [torch.from_numpy(saved["robust"])]
        max_dist, done, before = float(saved["max_dist"]), int(saved["batches"]), float(saved["seconds"])
        torch.set_rng_state(torch.from_numpy(saved["rng"]))
        if x.is_cuda and len(saved["rng_cuda"]):
            torch.cuda.set_rng_state(torch.from_numpy(saved["rng_cuda"]), x.device)
    last_save = time.perf_counter()
    starts = range(0, len(x), batch_size)
    it = progress.bar(starts, len(starts), f"eval {name}") if progress else starts
    verdicts = Verdicts()
    with frozen_eval(model):
        if done and len(x):  # resumed past the first batch: check the model on it (the stream is untouched)
            verdicts.check(model, to_unit(x[:batch_size]))
        for b, i in enumerate(it):
            if b < done:
                continue
            if batch_seeds is not None:
                torch.manual_seed(batch_seeds[b])
            xb, yb = to_unit(x[i : i + batch_size]), y[i : i + batch_size]
            clean = verdicts.clean(model, xb, yb)
            target = clean if attack_mask is None else clean & attack_mask[i : i + batch_size]
            robust = target.clone()
            if target.any():
                xs, ys = xb[target], yb[target]
                with autocast(xb.device, precision):
                    x_adv = attack(attack_model(model, precision), xs, ys)
                if model.training or any(m.training for m in model.modules()):
                    raise EvaluationError(f"attack {name!r} changed the model's mode (it must stay in eval mode)")
                max_dist = max(max_dist, check_adversarial(name, xs, x_adv, eps, norm=norm))
                robust[target] = verdicts.robust(model, x_adv.float(), ys)  # the final decision in fp32, outside autocast
            clean_parts.append(clean.cpu())
            robust_parts.append(robust.cpu())
            if state is not None and b + 1 < len(starts) and time.perf_counter() - last_save >= EVAL_SAVE_S:
                seconds = before + time.perf_counter() - start
                _save_eval_state(state, x, batch_size, b + 1, clean_parts, robust_parts, max_dist, seconds)
                last_save = time.perf_counter()
                fault_point(f"eval-batch:{b + 1}")
    flags = Flags(concat_flags(clean_parts), concat_flags(robust_parts), max_dist, before + time.perf_counter() - start)
    flags.model_check = verdicts.record()
    return flags


def concat_flags(parts: list[torch.Tensor]) -> np.ndarray:
    """Per-batch bool flags (on the CPU) as one array (an empty one when there were no batches)."""
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=bool)


def _save_eval_state(
    path: Path, x: torch.Tensor, batch_size: int, batches: int, clean: list, robust: list, max_dist: float, seconds: float
) -> None:
    buf = io.BytesIO()
    rng_cuda = torch.cuda.get_rng_state(x.device).numpy() if x.is_cuda else np.zeros(0, np.uint8)
    np.savez(
        buf, n=len(x), batch_size=batch_size, batches=batches, clean=torch.cat(clean).numpy(),
        robust=torch.cat(robust).numpy(), max_dist=max_dist, seconds=seconds, rng=torch.get_rng_state().numpy(),
        rng_cuda=rng_cuda,
    )  # fmt: skip
    atomic_write_bytes(path, buf.getvalue())


def _load_eval_state(path: Path | None, n: int, batch_size: int) -> dict[str, np.ndarray] | None:
    """The saved progress of this evaluation, or None (absent, unreadable or of another shape)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            saved = {k: f[k] for k in f.files}
        if int(saved["n"]) != n or int(saved["batch_size"]) != batch_size or len(saved["clean"]) > n:
            return None
        return saved
    except (OSError, ValueError, KeyError, EOFError):
        return None


def subset_indices(n_total: int, n_examples: int | None, seed: int) -> np.ndarray:
    """Test examples used: all, or a seeded random subset (sorted ids into the test set)."""
    if n_examples is None or n_examples >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.RandomState(seed).permutation(n_total)[:n_examples])


def parity(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackFn, eps: float, batch_size: int, name: str,
    low: Flags, seed: int, path: str, norm: str = "Linf", attack_mask: torch.Tensor | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The low-precision evaluation's check (``bench/evaluation/parity.py``): a random slice of its points, drawn
    with ``seed``, attacked again in fp32 and compared per sample with ``low``'s flags."""
    idx = parity_slice(len(y), seed)
    index = torch.from_numpy(idx).to(x.device)
    mask = None if attack_mask is None else attack_mask[index]
    fp32 = robust_flags(model, x[index], y[index], attack, eps, batch_size, f"{name} fp32 parity", norm=norm, attack_mask=mask)
    return check(path, low.robust[idx], fp32.robust, fp32.seconds)
