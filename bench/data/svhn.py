"""SVHN cropped digits (Netzer et al. 2011, "Reading Digits in Natural Images with Unsupervised
Feature Learning"; http://ufldl.stanford.edu/housenumbers/).

Reads the official format-2 MATLAB files ``train_32x32.mat`` (73,257 images) and
``test_32x32.mat`` (26,032) from ``svhn/`` or ``SVHN/`` under a data root (torchvision keeps them
directly in its root folder). ``X`` is 32 x 32 x 3 x N uint8 and ``y`` is N x 1 with the digit 0
stored as label 10, mapped to 0 here (``methods.md`` section 1.2). The 531,131-image ``extra``
split is not used. scipy (``scipy.io.loadmat``) is imported only when SVHN is loaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import DatasetMissingError
from bench.data.fashion_mnist import locate
from bench.data.idx import read_bytes
from bench.data.mnist import not_found
from bench.registry import DATASETS, NoParams
from bench.types import DatasetInfo, DatasetSplits

INFO = DatasetInfo("svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
FILES = {"train": ("train_32x32.mat", ""), "test": ("test_32x32.mat", "")}
SUBDIRS = ("svhn", "SVHN")


def read_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``.mat`` split as (N x 3 x 32 x 32 uint8, N int64 labels with 10 -> 0)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetMissingError(f"dataset 'svhn' needs scipy to read {path.name}: pip install scipy") from None
    mat = loadmat(io.BytesIO(read_bytes(path)), variable_names=("X", "y"))
    x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    if x.dtype != np.uint8 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DatasetMissingError(f"{path}: not an SVHN 32x32 file (X {x.dtype} {x.shape}, {len(y)} labels)")
    y[y == 10] = 0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y)


@DATASETS.register("svhn", params=NoParams, version=1, info=INFO, sizes=(73257, 26032))
def svhn(p: NoParams, roots: list[Path]) -> DatasetSplits:
    """SVHN: 73,257/26,032 colour 32x32 house-number digits, 10 classes (.mat files; no 'extra')."""
    found = locate(roots, FILES, SUBDIRS)
    if found is None:
        raise not_found(INFO.name, roots, SUBDIRS)
    train_x, train_y = read_mat(found["train"])
    test_x, test_y = read_mat(found["test"])
    return DatasetSplits(INFO, train_x, train_y, test_x, test_y, source=str(found["train"].parent))
