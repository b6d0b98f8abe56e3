"""MNIST (LeCun, Bottou, Bengio & Haffner 1998; http://yann.lecun.com/exdb/mnist/).

The same four IDX files as Fashion-MNIST (``train-images-idx3-ubyte`` etc., gzip-compressed or
not), read with :func:`bench.data.fashion_mnist.load_idx_dataset` from ``mnist/`` or
``MNIST/raw/`` (torchvision's download folder) under a data root. Mean 0.1307 / std 0.3081 are
the usual train-set statistics (PyTorch examples).

Checksums: no SHA-256 of the decompressed MNIST content has been recorded yet (it could not be
computed where this reader was written: no copy of the data), so ``verify`` defaults to False and
asking for it is a config error until the four digests are filled in below.

Also holds the one-line "dataset not found" error shared by the vision readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import DatasetMissingError
from bench.data.fashion_mnist import load_idx_dataset
from bench.registry import DATASETS
from bench.types import DatasetInfo, DatasetSplits

FILES: dict[str, tuple[str, str | None]] = {  # (file stem, SHA-256 of decompressed content)
    "train_x": ("train-images-idx3-ubyte", None),
    "train_y": ("train-labels-idx1-ubyte", None),
    "test_x": ("t10k-images-idx3-ubyte", None),
    "test_y": ("t10k-labels-idx1-ubyte", None),
}
SUBDIRS = ("mnist", "MNIST/raw")
INFO = DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,))


def fetch_hint(name: str) -> str:
    return f"run `bench data fetch {name}` for download or manual steps"


def not_found(name: str, roots: list[Path], subdirs: tuple[str, ...]) -> DatasetMissingError:
    """The one-line error for a dataset found under none of ``roots`` x ``subdirs``."""
    searched = ", ".join(str(r / s) for r in roots for s in subdirs)
    return DatasetMissingError(f"dataset {name!r} not found (searched {searched}): {fetch_hint(name)}")


@dataclass(frozen=True)
class MNISTParams:
    verify: bool = False  # SHA-256 check; unavailable until the digests are recorded (see docstring)

    def validate(self):
        if self.verify and any(sha is None for _, sha in FILES.values()):
            return "verify", "no SHA-256 checksums are recorded for MNIST yet; leave it false"
        return None


@DATASETS.register("mnist", params=MNISTParams, version=1, info=INFO, sizes=(60000, 10000))
def mnist(p: MNISTParams, roots: list[Path]) -> DatasetSplits:
    """MNIST: 60k/10k grayscale 28x28 handwritten digits, 10 classes (IDX files)."""
    return load_idx_dataset(INFO, roots, FILES, SUBDIRS, p.verify, fetch_hint(INFO.name))  # type: ignore[arg-type]
