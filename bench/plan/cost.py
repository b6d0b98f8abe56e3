"""Compute estimates: the FLOP model (shared/docs/landscape.md section 6) and per-task seconds.

Costs are counted in forward-equivalents F per image (F = FLOPs of one forward pass of one image,
its convolutions and linear layers, :func:`model_flops`):

* an attack step with input-only gradients costs 2 F, a training step (forward + backward) 3 F;
* a training image costs what its defence's spec declares (``train_cost(params)``, beside the defence:
  PGD-k adversarial training 2k + 3 F, TRADES 2k + 7, MART, FR, SAR and AWP 2k + 6, standard 3 F);
  a defence without one: 2 * ``params.steps`` (when it has steps) + 3;
* an attacked image costs what its attack's spec declares (``cost(params)``, beside the attack in
  ``bench/attacks/``: PGD-k and CW-k 2k F per restart + 2, FGSM 4 F, AutoAttack per point still robust);
  an attack without one is counted as PGD-20 (:data:`DEFAULT_ATTACK_F`) and ``bench validate`` says so;
  the attack part on the clean-correct points only (:data:`CLEAN_FRACTION`);
* a dataset's sizes, shape and classes come from its spec (``sizes``, ``info`` or ``nominal``; else
  50,000/10,000 images of 3x32x32 in 10 classes);
* validation and the logit-gap probe inside training, sanity checks and analyses at their sizes.

Seconds = FLOPs / throughput. The throughput is the FLOP/s ``bench profile`` measured on this
device (saved under the cache directory as ``perf/<device>.json``), per precision; without a
measurement, :data:`DEFAULT_FLOP_S` (labelled as a guess in ``bench validate``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from bench.core.files import atomic_write_text, default_cache_dir
from bench.core.modes import frozen_eval
from bench.core.progress import duration
from bench.device.native import cpu_speeds, device_slug, resolve
from bench.plan.kinds import ANALYSIS, EVAL, SANITY, SHARD, TRAIN, measured_as
from bench.registry import ATTACKS, DATASETS, DEFENCES
from bench.types import DatasetInfo

DEFAULT_FLOP_S = {
    "cpu": 5e10,
    "cuda": 5e13,
}  # a guess: about a quarter of a 2-core CPU's fp32 matmul peak; ~5 % of an H100
CLEAN_FRACTION = 0.8  # evaluation attacks only the clean-correct points (one clean forward for all)
DEFAULT_SIZES = (50000, 10000)  # a dataset whose spec declares no ``sizes``
DEFAULT_SHAPE = ((3, 32, 32), 10)  # a dataset whose spec declares neither a DatasetInfo nor ``nominal``
DEFAULT_ATTACK_F = 41  # an attack whose spec declares no ``cost``: a PGD-20 (stated by ``bench validate``)


class FlopCount(TorchDispatchMode):
    """FLOPs of every op run inside (the formulas of ``torch.utils.flop_counter``: conv, matmul, ...).

    ``FlopCounterMode`` itself tracks modules with backward hooks that ``torch.autograd.grad`` on an
    input (every attack step) refuses, so this counts the same ops without the module tracking.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **(kwargs or {}), out_val=out)
        return out


def shape_and_classes(dataset: str) -> tuple[tuple[int, ...], int]:
    """A dataset's image shape and class count without its files (nominal where only the files know)."""
    spec = DATASETS.get(dataset) if dataset in DATASETS else None
    if spec is not None and isinstance(spec.info, DatasetInfo):
        return spec.info.shape, spec.info.num_classes
    return (spec.nominal if spec is not None else None) or DEFAULT_SHAPE


def dataset_sizes(dataset: str) -> tuple[int, int]:
    """Train and test split sizes of a dataset without its files (its spec's ``sizes``)."""
    return (DATASETS.get(dataset).sizes if dataset in DATASETS else None) or DEFAULT_SIZES


def model_flops(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device | None = None) -> int:
    """F: FLOPs of one forward pass of one image of ``shape``: 2 per multiply-accumulate of every
    convolution and linear layer, counted by forward hooks (what ``FlopCount`` counts for these
    models, tested; a dispatch mode imports ``torch._dynamo`` on first use, about a second of a run)."""
    total = 0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Linear):
            total += 2 * out.numel() * module.in_features
        elif module.transposed:
            total += 2 * inputs[0].numel() * module.out_channels // module.groups * math.prod(module.kernel_size)
        else:
            total += 2 * out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)

    layers = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad(), frozen_eval(model):
            model(torch.zeros(1, *shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    return total


def measurement_path(cache_dir: Path, device: torch.device) -> Path:
    return Path(cache_dir) / "perf" / f"{device_slug(device)}.json"


def save_measurement(cache_dir: Path, device: torch.device, profile: dict[str, Any]) -> Path:
    """Keep what ``bench profile`` measured (FLOP/s per precision, train and eval) for the estimates."""
    fwd = profile["forward_flops_per_image"]
    paths = dict.fromkeys(r["precision"] for r in profile["train"] if "flop_s" in r)
    train = {p: max(r["flop_s"] for r in profile["train"] if r.get("precision") == p and "flop_s" in r) for p in paths}
    pgd = {e["precision"]: e["img_s"] * 41 * fwd for e in profile["eval"] if e["attack"] == "PGD-20" and e.get("paths", "plain") == "plain"}
    record = {"device": profile["device"], "model": profile["model"], "train_flop_s": train, "eval_flop_s": pgd,
              "threads": profile["threads"], "load_avg": profile["load_avg"]}  # fmt: skip
    path = measurement_path(cache_dir, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2))
    return path


def _saved(device: torch.device, cache_dir: Path | None) -> tuple[dict[str, Any] | None, Path]:
    """What ``bench profile`` saved for ``device`` (None: nothing readable) and where."""
    path = measurement_path(cache_dir or default_cache_dir(), device)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, path
    return (saved if isinstance(saved, dict) else None), path


def measured(device: torch.device, cache_dir: Path | None = None) -> bool:
    """Whether the estimates for ``device`` come from a ``bench profile`` measurement (else from a guess)."""
    return _saved(device, cache_dir)[0] is not None


def throughput(device: torch.device, cache_dir: Path | None = None) -> tuple[dict[str, dict[str, float]], str]:
    """FLOP/s for ``train`` and ``eval`` per precision on ``device``, and where they come from."""
    saved, path = _saved(device, cache_dir)
    guess = DEFAULT_FLOP_S.get(device.type, DEFAULT_FLOP_S["cpu"])
    out = {k: {"fp32": guess} for k in ("train", "eval")}
    if saved is None:
        return out, f"a guessed {guess / 1e9:.0f} GFLOP/s (run `bench profile` on this machine to measure)"
    for kind in ("train", "eval"):
        for p, v in (saved.get(f"{kind}_flop_s") or {}).items():
            if isinstance(v, (int, float)) and v > 0:
                out[kind][p] = float(v)
    return out, f"FLOP/s measured by `bench profile` ({path})"


def forward_flops(plan: Any) -> float:
    """F of the suite's model at its dataset's shape (one image through a CPU copy of the model: the meta
    device would spare the allocation but its first use costs about a second, more than building a ResNet-18)."""
    from bench.models import build

    suite = plan.suite
    shape, classes = shape_and_classes(suite.dataset.name)
    try:
        return float(model_flops(build(suite.model.name, suite.model.params, classes, shape), shape))
    except Exception:  # noqa: BLE001 - a model that cannot be built or run here: the SmallCNN figure
        return 2.0e7


def attack_forwards(name: str, p: Any) -> float:
    """Forward-equivalents per attacked image of a registered attack: its spec's ``cost(params)``."""
    spec = ATTACKS.get(name)
    return spec.cost(p) if spec.cost is not None else DEFAULT_ATTACK_F


def train_forwards(defence: Any) -> float:
    """Forward-equivalents per training image of a defence's step: its spec's ``train_cost(params)``."""
    spec = DEFENCES.get(defence.name) if defence.name in DEFENCES else None
    if spec is not None and spec.train_cost is not None:
        return spec.train_cost(defence.params)
    return 2 * getattr(defence.params, "steps", 0) + 3


def uncosted(plan: Any) -> list[str]:
    """The plan's attacks whose spec declares no ``cost`` (estimated as :data:`DEFAULT_ATTACK_F`)."""
    names = {a.name for a in getattr(plan, "attacks", ())}
    return sorted(n for n in names if n in ATTACKS and ATTACKS.get(n).cost is None)


def task_flops(task: Any, plan: Any, f: float) -> tuple[float, str]:
    """FLOPs of one task and the precision it runs in."""
    suite = plan.suite
    ev = plan.eval_spec
    train_size, test_size = dataset_sizes(suite.dataset.name)
    n_test = min(ev.n_examples or 10**9, test_size)
    if measured_as(task) == TRAIN.name:
        spec = suite.train
        n_train = train_size * (1 - spec.val_fraction)
        n_train = min(n_train, spec.subset or n_train)
        n_val = min(spec.val_examples or 10**9, train_size * spec.val_fraction)
        val = 0 if spec.selection != "best_val" else n_val * (2 * spec.val_attack.steps + 2)
        per_epoch = n_train * train_forwards(task.defence) + val + 128 * (2 * spec.val_attack.steps + 2)
        return task.epochs * per_epoch * f * (1 + len(task.averagers) * 0.05), spec.precision
    if task.kind in (EVAL.name, SHARD.name):
        if getattr(task, "shards", ()):
            return 0.0, "fp32"  # merges its shards' flags
        if task.attack.kind != "attack":  # a corruption or external column: the clean and the other image, one forward each
            return n_test * 2 * f, "fp32"
        n = min(n_test, task.attack.n_examples or n_test) / (task.count if task.kind == SHARD.name else 1)
        per_point = 1 + CLEAN_FRACTION * (attack_forwards(task.attack.name, task.attack.params) - 1)
        return n * per_point * f, ev.precision
    if task.kind == SANITY.name:
        return min(n_test, 256) * (41 + 3) * f, "fp32"
    if task.kind == ANALYSIS.name:
        a = suite.analysis
        h, w = shape_and_classes(suite.dataset.name)[0][1:]
        heat = a.heatmap_images * h * (w // 2 + 1) if a.heatmap else 0
        return (min(n_test, a.n_images) * (2 * a.attack_steps + 1 + 40) + heat) * f, "fp32"
    return 0.0, "fp32"


def estimate_seconds(task: Any, plan: Any, device: torch.device, cache_dir: Path | None = None,
                     _cache: dict | None = None) -> float:  # fmt: skip
    """Estimated seconds of ``task`` on ``device``: the FLOP model over the measured (or default) FLOP/s."""
    cache = _cache if _cache is not None else {}
    if "f" not in cache:
        cache["f"] = forward_flops(plan)
        cache["rate"], cache["source"] = throughput(device, cache_dir)
    flops, precision = task_flops(task, plan, cache["f"])
    kind = "train" if measured_as(task) == TRAIN.name else "eval"  # the throughput measured for training, else evaluation
    return flops / path_rate(cache["rate"][kind], precision, device, cache_dir)


def path_rate(rates: dict[str, float], precision: str, device: torch.device, cache_dir: Path | None) -> float:
    """FLOP/s of ``precision`` (``auto`` resolved on ``device``): measured, else fp32's scaled by the
    precision probe's ratio on a CPU (an emulated bf16 is estimated as slow as it runs), else fp32's."""
    path = resolve(precision, device, cache_dir)
    if path in rates:
        return rates[path]
    if device.type == "cpu" and path in ("bf16", "fp16"):
        return rates["fp32"] * cpu_speeds(cache_dir)["ratios"].get(path, 1.0)
    return rates["fp32"]


def estimates(plan: Any, device: torch.device, cache_dir: Path | None = None) -> dict[str, float]:
    """{task key: estimated seconds} for every runnable task of ``plan`` (the priors of ``bench/plan/estimate.py``)."""
    cache: dict = {}
    return {t.key: estimate_seconds(t, plan, device, cache_dir, cache) for t in plan.tasks}


def summary(plan: Any, device: torch.device, store: Any) -> str:
    """One line for ``bench validate``: the estimated time of the tasks not cached yet."""
    cache: dict = {}
    by_kind: dict[str, float] = {}
    for t in plan.tasks:
        if not store.has(t.kind, t.key):
            by_kind[t.kind] = by_kind.get(t.kind, 0.0) + estimate_seconds(t, plan, device, store.root, cache)
    total = sum(by_kind.values())
    if not by_kind:
        return f"  estimated time on {device.type}: nothing to compute (everything cached)"
    parts = ", ".join(f"{k} {duration(v)}" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    line = f"  estimated time on {device.type}: {duration(total)} ({parts}); from {cache['source']}"
    guessed = uncosted(plan)
    if guessed:
        line += f"\n  note: {', '.join(guessed)} declare{'s' if len(guessed) == 1 else ''} no cost; estimated as PGD-20 ({DEFAULT_ATTACK_F} forward-equivalents per image)"
    return line
