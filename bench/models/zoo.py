"""RobustBench model-zoo checkpoints as reference rows (optional extra ``zoo``).

A suite lists them under ``zoo: [robustbench:<name>, ...]``; each becomes a leaderboard row
evaluated under the suite's attacks and threat model, with no training. RobustBench models take
[0,1] inputs and normalise inside, like ours. ``robustbench`` is imported lazily, only when such a
row is evaluated; ``bench validate`` never needs it.

robustbench 1.1.1 needs three workarounds to import (landscape.md section 7), two of which are
applied here: its ``eval.py`` imports the module ``autoattack`` while its declared dependency
installs ``pyautoattack`` (aliased below), and it needs a torchvision that imports (the CUDA build
of torch, or torchvision's schemas registered for a CPU build). The third is an install pin:
``setuptools<81`` for ``pkg_resources``, which the ``zoo`` extra declares.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from torch import nn

from bench.errors import BenchError

PREFIX = "robustbench:"
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100"}  # ours -> RobustBench's dataset names


def zoo_name(entry: str) -> str:
    return entry[len(PREFIX) :]


def _import_robustbench():
    if "autoattack" not in sys.modules:
        try:
            importlib.import_module("autoattack")
        except ImportError:
            try:
                sys.modules["autoattack"] = importlib.import_module("pyautoattack")
            except ImportError:
                pass
    try:
        return importlib.import_module("robustbench.utils")
    except Exception as e:  # noqa: BLE001 - ImportError, or torchvision's RuntimeError on CPU-only torch
        raise BenchError(
            f"zoo rows need the optional `zoo` extra (pip install -e '.[zoo]'); importing robustbench failed: "
            f"{type(e).__name__}: {e} (see README, 'RobustBench reference rows')"
        ) from None


def load_zoo_model(entry: str, dataset: str, model_dir: Path, device: torch.device) -> nn.Module:
    """Load ``robustbench:<name>`` for ``dataset`` (L-inf) from ``model_dir``, downloading if needed."""
    if dataset not in DATASETS:
        raise BenchError(f"zoo row {entry}: RobustBench has no {dataset!r} models here (supported: {', '.join(DATASETS)})")
    utils = _import_robustbench()
    try:
        model = utils.load_model(model_name=zoo_name(entry), model_dir=str(model_dir), dataset=DATASETS[dataset], threat_model="Linf")
    except Exception as e:  # noqa: BLE001 - unknown names, failed downloads, corrupt files
        raise BenchError(f"zoo row {entry}: could not load the checkpoint ({type(e).__name__}: {e})") from None
    return model.to(device).eval()
