"""Device choice (once), seeding and provenance."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.device.native import cpu_model

DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(name: str) -> torch.device | None:
    """The device ``name`` means (None for ``auto``), without checking this machine has it; a name torch
    does not know (``gpu``) is a one-line error, never a traceback."""
    from bench.core.errors import BenchError

    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise BenchError(f"--device {name}: unknown device (use auto, cpu, cuda or cuda:N)")
    return device


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU. Called once, by the CLI or ``run_suite``.
    A device this machine lacks (``cuda`` without a GPU, ``cuda:3`` with two) is a one-line error."""
    from bench.core.errors import BenchError

    if isinstance(name, torch.device):
        name = str(name)
    device = check_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"--device {name}: CUDA is not available on this machine (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"--device {name}: MPS is not available on this machine (use auto or cpu)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_sha() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device) -> dict[str, Any]:
    from bench.core.version import __version__

    return {
        "bench": __version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "device": device_name(device),
    }
