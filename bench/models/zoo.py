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

import difflib
import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from bench.core.errors import BenchError

PREFIX = "robustbench:"
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100"}  # ours -> RobustBench's dataset names


# RobustBench's L-inf model zoo, as listed in robustbench/model_zoo/cifar10.py and cifar100.py at
# github.com/RobustBench/robustbench commit 78fcc9e (2025-03-31): a snapshot, so that `bench
# validate` catches a misspelt row without robustbench installed. Where robustbench imports (the
# `zoo` extra), its own list is used instead, so a model added later is never refused by a stale copy.
# fmt: off
KNOWN_LINF: dict[str, tuple[str, ...]] = {
    "cifar10": (
        "Andriushchenko2020Understanding", "Carmon2019Unlabeled", "Sehwag2020Hydra", "Wang2020Improving",
        "Hendrycks2019Using", "Rice2020Overfitting", "Zhang2019Theoretically", "Engstrom2019Robustness",
        "Chen2020Adversarial", "Huang2020Self", "Pang2020Boosting", "Wong2020Fast", "Ding2020MMA",
        "Zhang2019You", "Zhang2020Attacks", "Wu2020Adversarial_extra", "Wu2020Adversarial",
        "Gowal2020Uncovering_70_16", "Gowal2020Uncovering_70_16_extra", "Gowal2020Uncovering_34_20",
        "Gowal2020Uncovering_28_10_extra", "Sehwag2021Proxy", "Sehwag2021Proxy_R18",
        "Sehwag2021Proxy_ResNest152", "Sitawarin2020Improving", "Chen2020Efficient", "Cui2020Learnable_34_20",
        "Cui2020Learnable_34_10", "Zhang2020Geometry", "Rebuffi2021Fixing_28_10_cutmix_ddpm",
        "Rebuffi2021Fixing_106_16_cutmix_ddpm", "Rebuffi2021Fixing_70_16_cutmix_ddpm",
        "Rebuffi2021Fixing_70_16_cutmix_extra", "Sridhar2021Robust", "Sridhar2021Robust_34_15",
        "Rebuffi2021Fixing_R18_ddpm", "Rade2021Helper_R18_extra", "Rade2021Helper_R18_ddpm",
        "Rade2021Helper_extra", "Rade2021Helper_ddpm", "Huang2021Exploring", "Huang2021Exploring_ema",
        "Addepalli2021Towards_RN18", "Addepalli2021Towards_WRN34", "Gowal2021Improving_70_16_ddpm_100m",
        "Dai2021Parameterizing", "Gowal2021Improving_28_10_ddpm_100m", "Gowal2021Improving_R18_ddpm_100m",
        "Chen2021LTD_WRN34_10", "Chen2021LTD_WRN34_20", "Standard", "Kang2021Stable", "Jia2022LAS-AT_34_10",
        "Jia2022LAS-AT_70_16", "Pang2022Robustness_WRN28_10", "Pang2022Robustness_WRN70_16",
        "Addepalli2022Efficient_RN18", "Addepalli2022Efficient_WRN_34_10", "Debenedetti2022Light_XCiT-S12",
        "Debenedetti2022Light_XCiT-M12", "Debenedetti2022Light_XCiT-L12", "Huang2022Revisiting_WRN-A4",
        "Wang2023Better_WRN-28-10", "Wang2023Better_WRN-70-16", "Xu2023Exploring_WRN-28-10",
        "Cui2023Decoupled_WRN-28-10", "Cui2023Decoupled_WRN-34-10", "Bai2023Improving_edm", "Peng2023Robust",
        "Bai2024MixedNUTS", "Chen2024Data_WRN_34_10", "Chen2024Data_WRN_34_20",
        "Amini2024MeanSparse_Ra_WRN_70_16", "Amini2024MeanSparse_S-WRN-94-16",
        "Bartoldson2024Adversarial_WRN-94-16", "Bartoldson2024Adversarial_WRN-82-8"
    ),
    "cifar100": (
        "Gowal2020Uncovering", "Gowal2020Uncovering_extra", "Cui2020Learnable_34_20_LBGAT6",
        "Cui2020Learnable_34_10_LBGAT0", "Cui2020Learnable_34_10_LBGAT6", "Chen2020Efficient",
        "Wu2020Adversarial", "Sehwag2021Proxy", "Sitawarin2020Improving", "Hendrycks2019Using",
        "Rice2020Overfitting", "Rebuffi2021Fixing_70_16_cutmix_ddpm", "Rebuffi2021Fixing_28_10_cutmix_ddpm",
        "Rebuffi2021Fixing_R18_ddpm", "Rade2021Helper_R18_ddpm", "Addepalli2021Towards_PARN18",
        "Addepalli2021Towards_WRN34", "Chen2021LTD_WRN34_10", "Pang2022Robustness_WRN28_10",
        "Pang2022Robustness_WRN70_16", "Jia2022LAS-AT_34_10", "Jia2022LAS-AT_34_20",
        "Addepalli2022Efficient_RN18", "Addepalli2022Efficient_WRN_34_10", "Debenedetti2022Light_XCiT-S12",
        "Debenedetti2022Light_XCiT-M12", "Debenedetti2022Light_XCiT-L12",
        "Cui2020Learnable_34_10_LBGAT9_eps_8_255", "Wang2023Better_WRN-28-10", "Wang2023Better_WRN-70-16",
        "Bai2023Improving_edm", "Bai2023Improving_trades", "Cui2023Decoupled_WRN-28-10",
        "Cui2023Decoupled_WRN-34-10", "Cui2023Decoupled_WRN-34-10_autoaug", "Bai2024MixedNUTS",
        "Chen2024Data_WRN_34_10", "Amini2024MeanSparse_S-WRN-70-16"
    ),
}
# fmt: on
SNAPSHOT = "bench's snapshot of RobustBench's model zoo (2025-03; install the `zoo` extra for its current list)"


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


def known_models(dataset: str) -> tuple[tuple[str, ...], str]:
    """RobustBench's L-inf models for ``dataset`` and where the list came from: robustbench's own
    list when it imports, else the snapshot above (validation never needs the extra)."""
    try:
        if "robustbench" not in sys.modules and importlib.util.find_spec("robustbench") is None:
            raise ImportError
        _import_robustbench()
        from robustbench.model_zoo import model_dicts  # type: ignore[import-not-found]
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel  # type: ignore[import-not-found]

        return tuple(model_dicts[BenchmarkDataset(DATASETS[dataset])][ThreatModel.Linf]), "robustbench's model zoo"
    except Exception:  # noqa: BLE001 - not installed, or one of its import problems: use the snapshot
        return KNOWN_LINF.get(dataset, ()), SNAPSHOT


def zoo_problem(entry: str, dataset: str, norm: str) -> str | None:
    """Why ``robustbench:<name>`` cannot be a row of a suite on ``dataset`` under ``norm`` (None if it can)."""
    if dataset not in DATASETS:
        return f"RobustBench reference rows need dataset cifar10 or cifar100 (32x32 colour), not {dataset!r}"
    if norm != "Linf":
        return f"RobustBench reference rows are loaded from its Linf zoo; this suite's threat is {norm}"
    name = zoo_name(entry)
    known, source = known_models(dataset)
    if name in known:
        return None
    elsewhere = [d for d in DATASETS if d != dataset and name in KNOWN_LINF[d]]
    if elsewhere:
        return f"{name} is a {elsewhere[0]} model; this suite's dataset is {dataset}"
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {dataset} Linf model {name!r}{hint}; checked against {source}"
