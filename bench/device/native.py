"""What this device runs natively, and ``precision: auto`` resolved from it.

``resolve(precision, device)`` turns a suite's precision into the path a task actually runs; it is
called where the task runs (a worker process, a Ray task, a Slurm job), never by the planner, so a
CPU login node planning for GPU workers decides nothing for them:

* ``fp32``, ``bf16``, ``fp16``: themselves (``tf32`` off CUDA runs as ``fp32``: TF32 is an
  Ampere-and-later CUDA mode);
* ``auto`` on CUDA: ``bf16`` from compute capability 8.0 (native bf16 tensor cores), ``fp16``
  (autocast with loss scaling) on 6.0 to 7.x (P100, V100, T4, RTX 20), else ``fp32``;
* ``auto`` on a CPU: the fastest of ``bf16`` and ``fp16`` if it beats fp32 by :data:`NATIVE_RATIO`
  in a sub-second probe (a channels_last convolution and a matmul under autocast, against fp32),
  else ``fp32``. The probe is what decides: CPU flags say what the chip has (AVX512-BF16,
  AMX-BF16), not what oneDNN uses (``ONEDNN_MAX_CPU_ISA`` can forbid it), and they are recorded
  with the result. Measured: 1.8x on an AMD EPYC with AVX512-BF16, 0.17x with oneDNN limited to
  AVX2 (bf16 emulated), the 0.21x an AVX2-only EPYC gave in training (issue #22).

The probe's result is kept per machine kind and torch version (CPU model, flags, torch version,
oneDNN/ATen ISA limits) in ``<cache>/perf/native-<fingerprint>.json`` and in memory, so it runs
once per machine, not once per task. ``emulation_warning`` is the one line ``bench validate`` and
``bench run`` print for an explicit precision this device only emulates.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.core.files import atomic_write_text
from bench.device.precision import DTYPES

LOW = ("bf16", "fp16")  # autocast dtypes, in order of preference (bf16 needs no loss scaling)
NATIVE_RATIO = 1.2  # a low precision counts as native when the probe runs it this much faster than fp32
EMULATED_RATIO = 0.9  # an explicit low precision slower than this (x fp32) is warned about
PROBE_SECONDS, PROBE_ROUNDS = 0.02, 3  # per kernel, precision and round: the whole probe takes under a second
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16")
PROBE_VERSION = 1
_memo: dict[str, dict[str, Any]] = {}


def device_slug(device: torch.device) -> str:
    """A file-name-safe name of the device: ``cpu-amd-epyc-...`` or ``cuda-nvidia-h200``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_model()
    return f"{device.type}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of /proc/cpuinfo (None where the file or the field does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The bf16/fp16-relevant flags of this CPU (from /proc/cpuinfo; empty where it does not exist)."""
    have = set((_cpuinfo("flags") or "").split())
    return [f for f in CPU_FLAGS if f in have]


def fingerprint(device: torch.device) -> str:
    """What the probe's result depends on: the chip, its flags, torch and the ISA limits in force."""
    parts = [device_slug(device), ",".join(cpu_flags()), torch.__version__, str(PROBE_VERSION),
             os.environ.get("ONEDNN_MAX_CPU_ISA", ""), os.environ.get("ATEN_CPU_CAPABILITY", "")]  # fmt: skip
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (at least two calls)."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 2:
        fn()
        calls += 1
    return calls / elapsed


def probe(seconds: float = PROBE_SECONDS, rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """Speed of bf16 and fp16 autocast relative to fp32 on this CPU: the geometric mean over a 3x3
    channels_last convolution (oneDNN, as the models' convolutions) and a matmul (as their linear
    layers), on one thread. Rounds alternate the precisions and the best rate of each is kept, so a load
    that comes and goes slows every precision alike instead of deciding the answer; one thread because
    a multi-threaded kernel that shares its cores with another process stalls (measured: bf16 at 0.5x
    fp32 with two threads and a busy core, 1.9x on one thread, on the same AVX512-BF16 EPYC)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 64, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    a, b = torch.randn(128, 512, generator=g), torch.randn(512, 512, generator=g)
    kernels = (lambda: torch.conv2d(x, w, padding=1), lambda: a @ b)
    calls = {(p, i): (k if p == "fp32" else (lambda k=k, p=p: _autocast_call(k, p))) for p in ("fp32", *LOW) for i, k in enumerate(kernels)}
    best = dict.fromkeys(calls, 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core: what the chip does per core, whatever else runs on the others
    try:
        with torch.no_grad():
            for fn in calls.values():  # warm-up: oneDNN builds its kernels on first use
                fn()
            for _ in range(rounds):
                for key, fn in calls.items():
                    best[key] = max(best[key], _rate(fn, seconds))
    finally:
        torch.set_num_threads(threads)
    out = {}
    for p in LOW:
        rel = torch.tensor([best[(p, i)] / best[("fp32", i)] for i in range(len(kernels))])
        out[p] = round(float(rel.log().mean().exp()), 3)
    return out


def _autocast_call(kernel: Callable[[], Any], precision: str) -> Any:
    with torch.autocast("cpu", dtype=DTYPES[precision]):
        return kernel()


def cpu_speeds(cache_dir: Path | None = None) -> dict[str, Any]:
    """The probe's record for this CPU: ``{"ratios": {"bf16": x, "fp16": y}, "flags": [...], ...}``,
    measured once per machine kind and torch version (kept under ``cache_dir``, else in memory only)."""
    device = torch.device("cpu")
    key = fingerprint(device)
    if key in _memo:
        return _memo[key]
    path = None if cache_dir is None else Path(cache_dir) / "perf" / f"native-{key}.json"
    record = None
    if path is not None and path.is_file():
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or not isinstance(record.get("ratios"), dict):
                record = None
        except (OSError, ValueError):
            record = None
    if record is None:
        record = {"device": device_slug(device), "flags": cpu_flags(), "torch": torch.__version__, "ratios": probe(),
                  "threads": torch.get_num_threads()}  # fmt: skip
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(record, indent=2))
            except OSError:
                pass  # a read-only cache: measured again next time, nothing else changes
    _memo[key] = record
    return record


def cuda_path(device: torch.device) -> str:
    """``auto`` on a CUDA device: bf16 from compute capability 8.0, fp16 from 6.0, else fp32."""
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16" if major >= 6 else "fp32"


def resolve(precision: str, device: torch.device, cache_dir: Path | None = None) -> str:
    """The path ``precision`` runs on ``device``: fp32, bf16, fp16 or tf32 (see the module docstring)."""
    if precision == "tf32":
        return "tf32" if device.type == "cuda" else "fp32"
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return cuda_path(device)
    if device.type != "cpu":
        return "fp32"  # MPS and others: no probe written for them yet
    ratios = cpu_speeds(cache_dir)["ratios"]
    best = max(LOW, key=lambda p: (ratios.get(p, 0.0), p == "bf16"))
    return best if ratios.get(best, 0.0) >= NATIVE_RATIO else "fp32"


def explain(precision: str, device: torch.device, cache_dir: Path | None = None) -> str:
    """Why ``precision`` resolves as it does on ``device``, in a few words (``bench validate``, profiles)."""
    path = resolve(precision, device, cache_dir)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{path} (compute capability {major}.{minor})"
    if device.type != "cpu":
        return path
    record = cpu_speeds(cache_dir)
    ratios = ", ".join(f"{p} {r:.2f}x" for p, r in record["ratios"].items())
    flags = ", ".join(f for f in record["flags"] if "bf16" in f or "fp16" in f) or "no native bf16/fp16 flags"
    return f"{path} (probe vs fp32: {ratios}; {flags})"


def emulation_warning(precision: str, device: torch.device, cache_dir: Path | None = None) -> str | None:
    """One line when an explicit bf16/fp16 only runs emulated here (slower than fp32), else None."""
    if precision not in LOW or device.type != "cpu":
        return None
    ratio = cpu_speeds(cache_dir)["ratios"].get(precision)
    if ratio is None or ratio >= EMULATED_RATIO:
        return None
    return f"{precision} runs at {ratio:.2f}x fp32 on this CPU (not native here); use precision: auto"


def precision_warnings(suite: Any, device: torch.device, cache_dir: Path | None = None) -> list[str]:
    """One line per precision of ``suite`` (``train``, ``eval``) that ``device`` only emulates, naming the
    file and field: what ``bench validate`` and ``bench run`` print before any work."""
    out = []
    for section, spec in (("train", suite.train), ("eval", suite.eval)):
        where = f"{suite.sources.get(section, suite.path)}: {section}.precision"
        if spec.precision == "tf32" and device.type != "cuda":
            out.append(f"{where}: tf32 is a CUDA (Ampere and later) mode; on {device.type} it runs as fp32")
            continue
        message = emulation_warning(spec.precision, device, cache_dir)
        if message:
            out.append(f"{where}: {message}")
    return out
