"""CIFAR-10-C and CIFAR-100-C (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019, arXiv 1903.12261): the released files.

Released layout (Zenodo records 2535967 and 3555552, as extracted): a folder ``CIFAR-10-C/`` or
``CIFAR-100-C/`` holding one ``<corruption>.npy`` per corruption, a uint8 array of shape
(50000, 32, 32, 3) (N x H x W x C) that stacks the 10,000 test images five times, severity 1 first
(``make_cifar_c.py``: ``for severity in range(1, 6): for img in test_data``), and ``labels.npy`` of
shape (50000,) (uint8 in the release; any integer dtype is read). Row ``(s - 1) * n + i`` is test
image ``i`` at severity ``s``, so test ids are those of the clean test split.

The folders are looked for under the data roots like every dataset (``bench.data.data_roots``),
directly or under ``cifar10/`` / ``cifar100/``; ``bench data status`` lists them. Arrays are
memory-mapped, so reading one severity touches a fifth of a 150 MB file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.core.errors import DatasetMissingError

# the 15 corruptions of the benchmark (mean and mCE are over these), in the paper's order
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")  # released too, held out of the benchmark
SEVERITIES = 5

FOLDERS = {"cifar10": ("CIFAR-10-C", "cifar10/CIFAR-10-C"), "cifar100": ("CIFAR-100-C", "cifar100/CIFAR-100-C")}
NAMES = {"cifar10-c": "cifar10", "cifar100-c": "cifar100"}  # as `bench data status` names them
SOURCES = {"cifar10": "https://zenodo.org/record/2535967", "cifar100": "https://zenodo.org/record/3555552"}


def locate(dataset: str, roots: list[Path]) -> Path | None:
    """The first ``<root>/<folder>`` holding ``labels.npy`` for ``dataset`` (cifar10 or cifar100), or None."""
    for root in roots:
        for sub in FOLDERS[dataset]:
            if (root / sub / "labels.npy").is_file():
                return root / sub
    return None


def missing(dataset: str, roots: list[Path]) -> DatasetMissingError:
    searched = ", ".join(str(r / s) for r in roots for s in FOLDERS[dataset])
    folder = FOLDERS[dataset][0]
    return DatasetMissingError(
        f"dataset {folder} not found (searched {searched}): download {folder}.tar from {SOURCES[dataset]} "
        f"and extract it into one of them (gives <root>/{folder}/<corruption>.npy and labels.npy)"
    )


def _open(path: Path, ndim_shape: tuple[int, ...]) -> np.ndarray:
    """``path`` memory-mapped, checked against the released layout (``-1`` = any length, a multiple of 5)."""
    if not path.is_file():
        raise DatasetMissingError(f"{path}: missing")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetMissingError(f"{path}: not a .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    want = " x ".join("N" if d == -1 else str(d) for d in ndim_shape)
    if arr.ndim != len(ndim_shape) or any(d not in (-1, s) for d, s in zip(ndim_shape, arr.shape)):
        raise DatasetMissingError(f"{path}: shape {tuple(arr.shape)}, expected {want} (the released layout)")
    if len(arr) % SEVERITIES:
        raise DatasetMissingError(f"{path}: {len(arr)} rows, not 5 severities of the test split stacked")
    return arr


def read(
    dataset: str, corruption: str, severity: int, roots: list[Path], n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images of ``dataset`` under ``corruption`` at ``severity`` (1..5): uint8 N x 3 x 32 x 32 and int64 labels.

    ``n`` keeps the first n test ids (as the suite's ``n_examples`` does for the clean split).
    """
    if dataset not in FOLDERS:
        raise DatasetMissingError(f"no released corruption files for {dataset!r}; released: {', '.join(FOLDERS)}")
    if corruption not in CORRUPTIONS + EXTRA:
        raise DatasetMissingError(f"unknown corruption {corruption!r}; released: {', '.join(CORRUPTIONS + EXTRA)}")
    if not 1 <= severity <= SEVERITIES:
        raise DatasetMissingError(f"severity {severity}: expected 1 to {SEVERITIES}")
    folder = locate(dataset, roots)
    if folder is None:
        raise missing(dataset, roots)
    labels = _open(folder / "labels.npy", (-1,))
    images = _open(folder / f"{corruption}.npy", (-1, 32, 32, 3))
    if images.dtype != np.uint8:
        raise DatasetMissingError(f"{folder / f'{corruption}.npy'}: dtype {images.dtype}, expected uint8")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetMissingError(f"{folder / 'labels.npy'}: dtype {labels.dtype}, expected integers")
    if len(images) != len(labels):
        raise DatasetMissingError(f"{folder / f'{corruption}.npy'}: {len(images)} images for {len(labels)} labels in labels.npy")
    per = len(images) // SEVERITIES
    stop = per if n is None else min(n, per)
    rows = slice((severity - 1) * per, (severity - 1) * per + stop)
    x = torch.from_numpy(np.ascontiguousarray(images[rows].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(np.asarray(labels[rows], dtype=np.int64))
    return x, y


def status(roots: list[Path], name: str | None = None) -> list[tuple[str, str]]:
    """(name, one-line status) for CIFAR-10-C and CIFAR-100-C (or ``name`` only): where, and which of the 15 are there."""
    out = []
    for label, dataset in NAMES.items():
        if name and name != label:
            continue
        folder = locate(dataset, roots)
        if folder is None:
            out.append((label, f"missing: {missing(dataset, roots)}"))
            continue
        absent = [c for c in CORRUPTIONS if not (folder / f"{c}.npy").is_file()]
        have = f"{len(CORRUPTIONS) - len(absent)}/{len(CORRUPTIONS)} corruptions"
        out.append((label, f"ok: {have}{' (missing: ' + ', '.join(absent) + ')' if absent else ''}, {folder}"))
    return out
