"""``bench data status`` and ``bench data fetch``: where datasets are, and how to get them.

``fetch`` downloads through torchvision (the optional ``vision`` extra: ``pip install -e
.[vision]``), which verifies each archive's MD5, into the first data root; where torchvision or the
network is missing it prints the exact manual steps instead. Readers never need torchvision.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from bench.core.errors import BenchError, DatasetMissingError
from bench.data import cifar_c, data_roots, load_dataset
from bench.registry import DATASETS

MANUAL = {
    "fashion-mnist": [
        "Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist   (files land in /usr/share/datasets/fashion-mnist)",
        "or download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz (links in the README of github.com/zalandoresearch/fashion-mnist) into {root}/fashion-mnist/",
    ],
    "mnist": [
        "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz (http://yann.lecun.com/exdb/mnist/ or a mirror) into {root}/mnist/",
    ],
    "cifar10": [
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
        "tar -xzf cifar-10-python.tar.gz -C {root}   (gives {root}/cifar-10-batches-py/)",
    ],
    "cifar100": [
        "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
        "tar -xzf cifar-100-python.tar.gz -C {root}   (gives {root}/cifar-100-python/)",
    ],
    "svhn": [
        "download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into {root}/svhn/",
        "reading them needs scipy: pip install scipy",
    ],
    "tiny-imagenet": [
        "download tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        "unzip tiny-imagenet-200.zip -d {root}   (gives {root}/tiny-imagenet-200/); reading it needs Pillow",
    ],
}

# torchvision dataset class and keyword arguments per split, and the sub-folder of the root
TORCHVISION = {
    "fashion-mnist": ("FashionMNIST", [{"train": True}, {"train": False}], ""),
    "mnist": ("MNIST", [{"train": True}, {"train": False}], ""),
    "cifar10": ("CIFAR10", [{"train": True}, {"train": False}], ""),
    "cifar100": ("CIFAR100", [{"train": True}, {"train": False}], ""),
    "svhn": ("SVHN", [{"split": "train"}, {"split": "test"}], "svhn"),
}


def status(data_dir: str | None = None, name: str | None = None) -> list[tuple[str, str]]:
    """(dataset, one-line status) for every registered file-based dataset, or for ``name`` only; then
    the released corruption sets (CIFAR-10-C, CIFAR-100-C: ``bench.data.cifar_c``)."""
    if name in cifar_c.NAMES:
        return cifar_c.status(data_roots(data_dir), name)
    out = []
    entries = [DATASETS.get(name)] if name else DATASETS.entries()  # unknown names fail with a did-you-mean
    for entry in entries:
        if entry.name == "synthetic" and not name:
            continue
        try:
            splits = load_dataset(entry.name, entry.params(), data_dir)
        except DatasetMissingError as e:
            out.append((entry.name, f"missing: {e}"))
            continue
        verified = "verified" if getattr(entry.params(), "verify", False) else "not verified"
        out.append((entry.name, f"ok: {len(splits.train_y)} train / {len(splits.test_y)} test, {verified}, {splits.source}"))
    return out if name else out + cifar_c.status(data_roots(data_dir))


def manual_steps(name: str, root: Path) -> str:
    steps = MANUAL.get(name, [f"see the docstring of the {name!r} reader for its on-disk layout"])
    return "\n".join(f"  {i}. {s.format(root=root)}" for i, s in enumerate(steps, 1))


def fetch(name: str, data_dir: str | None = None) -> str:
    """Download ``name`` with torchvision when possible; otherwise raise with the manual steps."""
    DATASETS.get(name)  # unknown names fail with a did-you-mean
    root = data_roots(data_dir)[0]  # --data-dir, else $BENCH_DATA, else the user data directory
    manual = f"To install {name} by hand:\n{manual_steps(name, root)}\nThen check with: bench data status"
    if name not in TORCHVISION:
        raise BenchError(f"{name} cannot be downloaded automatically.\n{manual}")
    try:
        datasets = importlib.import_module("torchvision.datasets")
    except Exception as e:  # noqa: BLE001 - ImportError, or torchvision's CPU-build RuntimeError
        raise BenchError(f"torchvision is not usable ({type(e).__name__}: {e}).\n{manual}") from None
    cls_name, splits, sub = TORCHVISION[name]
    target = root / sub if sub else root
    try:
        for kwargs in splits:
            getattr(datasets, cls_name)(str(target), download=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise BenchError(f"download of {name} failed ({type(e).__name__}: {e}).\n{manual}") from None
    return f"{name}: downloaded into {target}"
