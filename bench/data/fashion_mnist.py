"""Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747; MIT licence): the embedded default dataset.

Read from the four IDX files, gzip-compressed or not, in any of these layouts under a data root:
``fashion-mnist/`` (Debian's ``dataset-fashion-mnist`` package: ``/usr/share/datasets/fashion-mnist``)
or ``FashionMNIST/raw/`` (torchvision's download folder). Each file is verified by the SHA-256 of
its *decompressed* content, which is the same whichever source compressed it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import DatasetMissingError
from bench.data.idx import read_bytes, read_idx
from bench.registry import DATASETS
from bench.types import DatasetInfo, DatasetSplits

FILES = {
    "train_x": ("train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_y": ("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_x": ("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_y": ("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
SUBDIRS = ("fashion-mnist", "FashionMNIST/raw", "fashion_mnist")
INFO = DatasetInfo("fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,))
INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or put the four "
    "IDX .gz files in $BENCH_DATA/fashion-mnist/"
)


@dataclass(frozen=True)
class FashionMNISTParams:
    verify: bool = True  # check each file's SHA-256 (content, after decompression)


def _find(base: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (base / name).is_file():
            return base / name
    return None


def locate(roots: list[Path], files: dict[str, tuple[str, str]], subdirs: tuple[str, ...]) -> dict[str, Path] | None:
    """The first directory (root x subdir) holding every file, or None."""
    for root in roots:
        for sub in subdirs:
            found = {k: _find(root / sub, stem) for k, (stem, _) in files.items()}
            if all(found.values()):
                return found  # type: ignore[return-value]
    return None


def read_verified(path: Path, sha256: str | None) -> np.ndarray:
    raw = read_bytes(path)
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DatasetMissingError(f"{path}: checksum mismatch (corrupt or not the official file)")
    return read_idx(path, raw)


def load_idx_dataset(
    info: DatasetInfo,
    roots: list[Path],
    files: dict[str, tuple[str, str]],
    subdirs: tuple[str, ...],
    verify: bool,
    hint: str,
) -> DatasetSplits:
    found = locate(roots, files, subdirs)
    if found is None:
        searched = ", ".join(str(r / s) for r in roots for s in subdirs[:2])
        raise DatasetMissingError(f"dataset {info.name!r} not found (searched {searched}): {hint}")
    arrays = {k: read_verified(p, files[k][1] if verify else None) for k, p in found.items()}
    to_x = lambda a: torch.from_numpy(a).unsqueeze(1)  # noqa: E731  N x 1 x H x W uint8
    to_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return DatasetSplits(
        info,
        to_x(arrays["train_x"]),
        to_y(arrays["train_y"]),
        to_x(arrays["test_x"]),
        to_y(arrays["test_y"]),
        source=str(found["train_x"].parent),
    )


@DATASETS.register("fashion-mnist", params=FashionMNISTParams, version=1, info=INFO, sizes=(60000, 10000))
def fashion_mnist(p: FashionMNISTParams, roots: list[Path]) -> DatasetSplits:
    """Fashion-MNIST: 60k/10k grayscale 28x28 clothing images, 10 classes (IDX files, verified)."""
    return load_idx_dataset(INFO, roots, FILES, SUBDIRS, p.verify, INSTALL_HINT)
