"""``bench profile``: training and evaluation speed on this machine, side by side in one process.

Measured in one run, so the ratios hold on a loaded machine even when the absolute figures do not:

* **train**: images/s of the defence's full step exactly as ``bench/training/train.py`` runs it
  (``train_step``: the loss with its attack steps, backward, optimiser step; batches from uint8
  device tensors), in each precision (``--precisions``; by default fp32 and bf16 on a CPU, fp32,
  tf32, bf16 (compute capability 8.0 and later) and fp16 on CUDA) x layout (contiguous, channels_last),
  then channels_last with ``train.fuse_bn`` (adversaries crafted on the BN-folded view), optionally
  with ``torch.compile``;
* **FLOP/s and MFU**: FLOPs of one step counted with ``torch.utils.flop_counter`` (the same in every
  precision), divided by the step time, as a fraction of the peak matmul FLOP/s measured in the
  same run in that precision;
* **reference**: the textbook PGD-AT loop (a ``DataLoader`` over float tensors, BatchNorm in eval
  mode while crafting, ``loss.backward()`` inside the attack so weight gradients are computed and
  dropped) with the same steps, step size and batch size -> the speed-ups;
* **eval**: images/s of PGD-20 and AutoAttack (by default the quickstart's reduced cascade) on a
  batch labelled with the model's own predictions (so every point is attacked), in each precision,
  for the plain model and for the evaluation fast paths (channels_last, BatchNorms folded).

The measured FLOP/s are saved under the cache directory (``perf/<device>.json``) for the time
estimates of ``bench validate`` (``bench/plan/cost.py``). The table also says what ``precision: auto``
resolves to on this device and why (``bench/device/native.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from bench.attacks.autoattack import AutoAttackParams
from bench.attacks.pgd import PGDParams, step_size
from bench.commands.options import command_parser
from bench.core import params as params_mod
from bench.core.errors import BenchError, ConfigError
from bench.core.modes import frozen_eval
from bench.device.native import cuda_path, explain
from bench.device.precision import (
    DTYPES,
    PRECISION_CHOICES,
    PRECISIONS,
    FoldedView,
    attack_model,
    autocast,
    fuse_bn,
    prepare,
)
from bench.plan.cost import FlopCount, model_flops, shape_and_classes
from bench.registry import ATTACKS, DATASETS, DEFENCES, MODELS
from bench.types import DatasetInfo, ThreatModel, TrainContext

EXAMPLES = """examples:
  bench profile                                          # small_cnn, Fashion-MNIST, PGD-AT, batch 128 (< 1 min on 2 cores)
  bench profile --json                                   # {"train_img_s", "mfu", "speedup_vs_reference", ...}
  bench profile --defence trades --steps 3
  bench profile --model resnet18 --dataset cifar10 --device cuda --batch-size 512 --aa standard
  bench profile --compile                                # adds torch.compile rows (slow to compile on CPU)"""

PEAK_SECONDS = 0.5  # time spent measuring each precision's matmul peak
EVAL_FAST = "channels_last+fuse_bn"  # the evaluation model's fast paths (eval.channels_last, eval.fuse_bn)
QUICK_AA = AutoAttackParams(version="custom", attacks=("apgd-ce", "apgd-t"), n_iter=50, n_target_classes=2)


def add_profile_parser(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "profile", "training and evaluation images/s, FLOP/s, MFU and the speed-up over a textbook loop", EXAMPLES)
    p.add_argument("--model", default="small_cnn", help="registered model (default: small_cnn)")
    p.add_argument(
        "--dataset", default="fashion-mnist", help="registered dataset; synthetic data of its shape when absent"
    )
    p.add_argument("--defence", default="pgd_at", help="registered defence (default: pgd_at, PGD-10)")
    p.add_argument("--eps", default="1/10", help="L-inf radius (default: 1/10)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch (default: 128)")
    p.add_argument(
        "--steps",
        type=int,
        default=4,
        help="timed training steps per configuration, after one warm-up step (default: 4)",
    )
    p.add_argument(
        "--rounds", type=int, default=2, help="timing rounds over all configurations, best kept (default: 2)"
    )
    p.add_argument("--eval-images", type=int, default=128, help="images per evaluation timing (default: 128)")
    p.add_argument("--aa", choices=("quick", "standard", "none"), default="quick",
                   help="AutoAttack timed: quick = APGD-CE+APGD-T, 50 it, 2 targets (the quickstart's); standard; none")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) of the fast paths")
    p.add_argument("--precisions", default=None, metavar="LIST",
                   help="comma-separated paths to time (fp32,bf16,fp16,tf32; default: fp32,bf16 on a CPU, "
                        "fp32,tf32,bf16,fp16 on CUDA, bf16 from compute capability 8.0)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--data-dir", default=None, help="dataset root (default: $BENCH_DATA or ~/.cache/bench-data)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the measured FLOP/s are kept for estimates (default: $BENCH_CACHE or ~/.cache/bench)",
    )
    p.add_argument(
        "--no-save", action="store_true", help="do not record the measured FLOP/s for `bench validate` estimates"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], calls: int, device: torch.device, warmup: Callable[[], Any] | None = None) -> float:
    """Seconds per call of ``fn`` after one untimed warm-up call (of ``warmup`` when given)."""
    (fn if warmup is None else warmup)()
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def peak_matmul(device: torch.device, precision: str, seconds: float | None = None) -> float:
    """Peak FLOP/s of a large GEMM in ``precision`` on ``device``: the faster of a square matmul and the
    same-size GEMM run as a 1x1 channels_last convolution (best of a few timings each).

    On CPUs the two go through different libraries (the matmul through MKL/BLAS, the convolution
    through oneDNN, as the models' convolutions do); on the AMD EPYC of results/perf the matmul
    reached 187 GFLOP/s in fp32 and the convolution 414, so a matmul-only peak put MFU above 100 %.
    """
    n = 4096 if device.type == "cuda" else 1024
    dtype = DTYPES[precision]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    x = torch.randn(64, n, 8, 8, device=device).to(dtype).contiguous(memory_format=torch.channels_last)  # 4n x n
    w = b.reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)

    def speed(fn: Callable[[], Any], flops: float) -> float:
        per_call = timed(fn, 2, device)
        reps = max(1, int((seconds or PEAK_SECONDS) / 6 / max(per_call, 1e-6)))
        return flops / min(timed(fn, reps, device) for _ in range(3))

    with torch.no_grad(), autocast(device, "tf32" if precision == "tf32" else "fp32"):
        return max(speed(lambda: a @ b, 2 * n**3), speed(lambda: torch.conv2d(x, w), 2 * 64 * 64 * n * n))


def load_images(dataset: str, n: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo, str]:
    """``n`` uint8 training images with labels, the dataset info and where they came from
    (seeded random images of the dataset's shape when its files are not on this machine)."""
    from bench.data import load_dataset

    entry = DATASETS.get(dataset)
    try:
        splits = load_dataset(dataset, params_mod.build(entry.params, {}, f"dataset {dataset}"), data_dir)
    except BenchError:
        shape, k = shape_and_classes(dataset)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
        info = DatasetInfo(dataset, k, shape, (0.5,) * shape[0], (0.25,) * shape[0])
        return x, torch.randint(0, k, (n,), generator=g), info, f"synthetic {shape} ({dataset} files not found)"
    reps = -(-n // len(splits.train_y))
    x = splits.train_x[:n] if reps == 1 else splits.train_x.repeat(reps, 1, 1, 1)[:n]
    y = splits.train_y[:n] if reps == 1 else splits.train_y.repeat(reps)[:n]
    return x, y, splits.info, f"{dataset} (real)"


def reference_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                   batch_size: int, device: torch.device) -> Callable[..., None]:  # fmt: skip
    """One epoch of the textbook PGD-AT loop over ``x`` (float, CPU) as a callable."""
    loader = DataLoader(TensorDataset(x.float() / 255, y), batch_size=batch_size, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def epoch(limit: int | None = None) -> None:
        for i, (xb, yb) in enumerate(loader):
            if i == limit:
                return
            xb, yb = xb.to(device), yb.to(device)
            model.eval()
            x_adv = (xb + torch.empty_like(xb).uniform_(-eps, eps)).clamp(0, 1)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                loss = F.cross_entropy(model(x_adv), yb)
                loss.backward()  # weight gradients computed too, then dropped by zero_grad
                x_adv = torch.min(torch.max(x_adv.detach() + alpha * x_adv.grad.sign(), xb - eps), xb + eps).clamp(0, 1)
            model.train()
            opt.zero_grad()
            F.cross_entropy(model(x_adv), yb).backward()
            opt.step()

    return epoch


def bench_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fn: Any, params: Any, ctx: TrainContext,
                batch_size: int, precision: str, channels_last: bool) -> Callable[..., None]:  # fmt: skip
    """One epoch of bench's training step over ``x`` (uint8 on the device) as a callable."""
    from bench.data.loader import batches
    from bench.training.train import train_step

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    scaler = torch.amp.GradScaler(x.device.type) if precision == "fp16" else None  # as bench/training/train.py

    def epoch(limit: int | None = None) -> None:
        model.train()
        for i, (xb, yb) in enumerate(batches(x, y, batch_size, shuffle=True, g=g)):
            if i == limit:
                return
            train_step(model, opt, fn, xb, yb, params, ctx, precision, channels_last, scaler)

    return epoch


def step_flops(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fn: Any, params: Any, ctx: TrainContext
) -> int:
    """FLOPs of one training step on the batch ``x`` (uint8)."""
    from bench.training.train import train_step

    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with FlopCount() as counter:
        train_step(model, opt, fn, x.float() / 255, y, params, ctx)
    return counter.total


def eval_speed(
    model: torch.nn.Module, name: str, p: Any, x: torch.Tensor, threat: ThreatModel, precision: str
) -> float:
    """Images/s of attack ``name`` on float images ``x`` labelled with the model's own predictions."""
    entry = ATTACKS.get(name)
    with frozen_eval(model):
        with torch.no_grad():
            y = model(x).argmax(1)

        def run() -> None:
            with autocast(x.device, precision):
                entry.fn(attack_model(model, precision), x, y, threat, p)

        start = time.perf_counter()
        run()
        sync(x.device)
        return len(x) / (time.perf_counter() - start)


def profile(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from bench.device.env import device_name
    from bench.models import build

    if min(args.batch_size, args.steps, args.eval_images, args.rounds) < 1:
        raise ConfigError("bench profile", "--batch-size, --steps, --rounds and --eval-images must be at least 1")
    defence = DEFENCES.get(args.defence)
    params = params_mod.build(defence.params, {}, f"defence {args.defence}")
    eps_exact = params_mod.parse_fraction(args.eps, "--eps")
    threat = ThreatModel("Linf", Fraction(eps_exact), args.eps)
    eps = threat.eps_float
    n = args.batch_size * args.steps
    x_u8, y, info, source = load_images(args.dataset, max(n, args.eval_images), args.data_dir)
    torch.manual_seed(0)
    model_params = params_mod.build(MODELS.get(args.model).params, {}, f"model {args.model}")
    base = build(args.model, model_params, info.num_classes, info.shape, info.mean, info.std).to(device)
    ctx = TrainContext(0, 0, 1, (), threat, info.num_classes)
    x_dev, y_dev = x_u8[:n].to(device), y[:n].to(device)
    attack_steps, alpha = getattr(params, "steps", 10), step_size(getattr(params, "alpha", None), eps)
    flops = (
        step_flops(base, x_dev[: args.batch_size], y_dev[: args.batch_size], defence.fn, params, ctx) / args.batch_size
    )
    f_fwd = model_flops(base, info.shape, device)
    paths = precisions(args.precisions, device)
    peak = {p: peak_matmul(device, p) for p in paths}

    variants = [(p, cl, False, False) for p in paths for cl in (False, True)]
    variants += [(p, True, False, True) for p in paths]  # + train.fuse_bn
    variants += [(p, True, True, False) for p in paths] if args.compile else []
    configs: list[tuple[dict[str, Any], Callable[..., None]]] = [(
        {"config": "reference (textbook)", "precision": "fp32"},
        reference_loop(copy.deepcopy(base), x_u8[:n], y[:n], eps, alpha, attack_steps, args.batch_size, device),
    )]  # fmt: skip
    for precision, cl, comp, fold in variants:
        model = prepare(copy.deepcopy(base), cl, comp)
        label = f"bench {precision}" + (" channels_last" if cl else "") + (" compile" if comp else "") + (" fuse_bn" if fold else "")
        row = {"config": label, "precision": precision, "channels_last": cl, "compile": comp, "fuse_bn": fold}
        run_ctx = replace(ctx, folded=FoldedView.create(model)) if fold else ctx
        configs.append((row, bench_epoch(model, x_dev, y_dev, defence.fn, params, run_ctx, args.batch_size, precision, cl)))
    for row, epoch in configs:  # warm-up, then rounds interleaved so that load changes hit every configuration
        epoch(1)
    for _ in range(args.rounds):
        for row, epoch in configs:
            row["img_s"] = max(row.get("img_s", 0.0), n / timed(epoch, 1, device, warmup=lambda: None))
    rows = [row for row, _ in configs]
    ref = rows[0]["img_s"]
    for row in rows[1:]:
        row.update(flop_s=row["img_s"] * flops, mfu=row["img_s"] * flops / peak[row["precision"]])
    for r in rows:
        r["speedup"] = r["img_s"] / ref
    bench_rows = [r for r in rows if "mfu" in r]
    fp32 = max((r for r in bench_rows if r["precision"] == "fp32"), key=lambda r: r["img_s"])  # the fp32 path: layout fast paths on
    best = max(bench_rows, key=lambda r: r["img_s"])
    evals = _eval_rows(base, x_u8[: args.eval_images].to(device), threat, args.aa, paths)
    return {
        "device": device_name(device),
        "model": args.model, "dataset": source, "defence": args.defence, "params": params_mod.to_plain(params),
        "eps": args.eps, "batch_size": args.batch_size, "images": n, "threads": torch.get_num_threads(),
        "load_avg": list(os.getloadavg()),
        "forward_flops_per_image": f_fwd, "train_flops_per_image": flops, "train_flops_in_forwards": flops / f_fwd,
        "peak_matmul_flop_s": peak,
        "train": rows, "eval": evals,
        "train_img_s": best["img_s"], "best_config": best["config"], "mfu": {p: max(r["mfu"] for r in bench_rows if r["precision"] == p) for p in paths},
        "auto": explain("auto", device, args.cache_dir), "precisions": list(paths),
        "speedup_vs_reference": best["speedup"], "fp32_speedup_vs_reference": fp32["speedup"], "fp32_config": fp32["config"],
        "reference_img_s": ref,
    }  # fmt: skip


def precisions(text: str | None, device: torch.device) -> tuple[str, ...]:
    """The paths ``--precisions`` names (checked), or the device's default set."""
    if text is None:
        if device.type != "cuda":
            return PRECISIONS
        return ("fp32", "tf32", *(("bf16",) if cuda_path(device) == "bf16" else ()), "fp16")
    paths = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in paths if p not in PRECISION_CHOICES or p == "auto"]
    if bad or not paths:
        raise ConfigError("bench profile: --precisions", f"unknown {bad[0] if bad else 'empty list'!r}; choose from fp32, bf16, fp16, tf32")
    return paths


def _eval_rows(model: torch.nn.Module, x_u8: torch.Tensor, threat: ThreatModel, aa: str, paths: tuple[str, ...]) -> list[dict[str, Any]]:
    x = x_u8.float() / 255
    attacks = [("PGD-20", "pgd", PGDParams(steps=20))]
    if aa != "none":
        attacks.append((f"AutoAttack {aa}", "autoattack", QUICK_AA if aa == "quick" else AutoAttackParams()))
    fast = prepare(fuse_bn(model), channels_last=True)  # eval.channels_last + eval.fuse_bn
    return [
        {"attack": label, "precision": p, "paths": kind, "img_s": eval_speed(m, name, params, x, threat, p)}
        for label, name, params in attacks
        for kind, m in (("plain", model), (EVAL_FAST, fast))
        for p in paths
    ]


def table(r: dict[str, Any]) -> str:
    lines = [
        f"device {r['device']}; load average {r['load_avg'][0]:.2f}; model {r['model']}, data {r['dataset']}",
        f"defence {r['defence']} {r['params']}, eps {r['eps']}, batch {r['batch_size']}, {r['images']} images per timing",
        f"F = {r['forward_flops_per_image'] / 1e6:.2f} MFLOP per image forward; a training step costs"
        + f" {r['train_flops_in_forwards']:.1f} F per image (flop_counter)",
        "peak matmul: " + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in r["peak_matmul_flop_s"].items()),
        "",
        f"{'training step':<36} {'img/s':>8} {'GFLOP/s':>8} {'MFU':>6} {'vs ref':>7}",
    ]
    for row in r["train"]:
        flop = f"{row['flop_s'] / 1e9:8.1f}" if "flop_s" in row else f"{'':>8}"
        mfu = f"{100 * row['mfu']:5.1f}%" if "mfu" in row else f"{'':>6}"
        lines.append(f"{row['config']:<36} {row['img_s']:8.1f} {flop} {mfu} {row['speedup']:6.2f}x")
    lines += ["", f"{'evaluation (self-labelled batch)':<36} {'precision':>9} {'model':>22} {'img/s':>8}"]
    lines += [f"{e['attack']:<36} {e['precision']:>9} {e.get('paths', 'plain'):>22} {e['img_s']:8.1f}" for e in r["eval"]]
    best, fp32 = r["speedup_vs_reference"], r["fp32_speedup_vs_reference"]
    lines += ["", f"speed-up over the textbook loop: {best:.2f}x ({r['best_config']}), fp32 path {fp32:.2f}x ({r['fp32_config']})"]
    lines += [f"precision: auto resolves to {r['auto']} here"]
    return "\n".join(lines)


def cmd_profile(args: argparse.Namespace) -> int:
    from bench.core.files import default_cache_dir
    from bench.device.env import resolve_device
    from bench.plan.cost import save_measurement

    device = resolve_device(args.device)
    result = profile(args, device)
    if not args.no_save:
        result["saved_to"] = str(save_measurement(args.cache_dir or default_cache_dir(), device, result))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0
