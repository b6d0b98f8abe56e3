"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images").

Reads the official "python version" archives as extracted (the layout torchvision also uses):
``cifar-10-batches-py/`` with pickles ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, and
``cifar-100-python/`` with ``train`` and ``test``. Each pickle is a dict with ``b"data"`` (uint8,
N x 3072: the R, G and B 32x32 planes, row-major) and ``b"labels"`` (CIFAR-10) or
``b"fine_labels"`` (CIFAR-100; the 20 coarse labels are not used). Pickles are only ever loaded
from the user's own data directories. Means/stds: ``methods.md`` section 1.3 (FR ``main.py``).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import DatasetMissingError
from bench.data.fashion_mnist import locate
from bench.data.idx import read_bytes
from bench.data.mnist import not_found
from bench.registry import DATASETS, NoParams
from bench.types import DatasetInfo, DatasetSplits

CIFAR10 = DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
CIFAR100 = DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as (N x 3 x 32 x 32 uint8, N int64 labels)."""
    d = pickle.load(io.BytesIO(read_bytes(path)), encoding="bytes")  # noqa: S301 - the official format
    data = np.array(d[b"data"], dtype=np.uint8)  # a writable copy
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetMissingError(f"{path}: not a CIFAR batch (data {data.shape}, {len(labels)} labels)")
    return data.reshape(-1, 3, 32, 32), labels


def _load(
    info: DatasetInfo, roots: list[Path], subdirs: tuple[str, ...], train: list[str], test: str, key: bytes
) -> DatasetSplits:
    files = {n: (n, "") for n in [*train, test]}
    found = locate(roots, files, subdirs)
    if found is None:
        raise not_found(info.name, roots, subdirs)
    parts = [read_batch(found[n], key) for n in train]
    test_x, test_y = read_batch(found[test], key)
    to = torch.from_numpy
    return DatasetSplits(
        info,
        to(np.concatenate([x for x, _ in parts])),
        to(np.concatenate([y for _, y in parts])),
        to(test_x),
        to(test_y),
        source=str(found[test].parent),
    )


@DATASETS.register("cifar10", params=NoParams, version=1, info=CIFAR10, sizes=(50000, 10000))
def cifar10(p: NoParams, roots: list[Path]) -> DatasetSplits:
    """CIFAR-10: 50k/10k colour 32x32 images, 10 classes (python pickle batches)."""
    train = [f"data_batch_{i}" for i in range(1, 6)]
    subdirs = ("cifar-10-batches-py", "cifar10/cifar-10-batches-py")
    return _load(CIFAR10, roots, subdirs, train, "test_batch", b"labels")


@DATASETS.register("cifar100", params=NoParams, version=1, info=CIFAR100, sizes=(50000, 10000))
def cifar100(p: NoParams, roots: list[Path]) -> DatasetSplits:
    """CIFAR-100: 50k/10k colour 32x32 images, 100 fine classes (python pickles)."""
    subdirs = ("cifar-100-python", "cifar100/cifar-100-python")
    return _load(CIFAR100, roots, subdirs, ["train"], "test", b"fine_labels")
