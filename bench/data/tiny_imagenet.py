"""Tiny ImageNet (Stanford CS231N, Le & Yang 2015; http://cs231n.stanford.edu/tiny-imagenet-200.zip).

Reads the extracted official archive ``tiny-imagenet-200/``: ``wnids.txt`` (the class WordNet
ids), ``train/<wnid>/images/*.JPEG`` (500 per class) and ``val/images/*.JPEG`` labelled by
``val/val_annotations.txt`` (file, wnid, box; tab-separated). The official val set is our test
set (test labels are not public). Class indices follow the *sorted* wnids, as torchvision's
``ImageFolder`` (used by the FR authors' early loader) assigns them. Grayscale JPEGs are
converted to RGB. Mean/std: ``methods.md`` section 1.2.

Decoding 110k JPEGs takes minutes, so the decoded uint8 arrays are cached as ``.npy`` files next
to the dataset when that folder is writable, else under ``<bench cache>/datasets/``; the cache
name carries a fingerprint of the file listing, so a changed tree is decoded afresh. Pillow is
imported only when the JPEGs are decoded.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import DatasetMissingError
from bench.core.files import default_cache_dir
from bench.data.fashion_mnist import locate
from bench.data.mnist import fetch_hint, not_found
from bench.registry import DATASETS, NoParams
from bench.types import DatasetInfo, DatasetSplits

SUBDIRS = ("tiny-imagenet-200", "tiny-imagenet/tiny-imagenet-200")
MEAN, STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)
CACHE_FORMAT = 1  # bump when the decoded arrays change
PARTS = ("train_x", "train_y", "test_x", "test_y")


def list_files(base: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(sorted wnids, [(train JPEG, label)], [(val JPEG, label)])."""
    wnids = sorted({w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    train = [
        (path, index[w]) for w in wnids for path in sorted((base / "train" / w / "images").glob("*.JPEG"))
    ]
    test = []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            if fields[1] not in index:
                raise DatasetMissingError(f"{base}/val/val_annotations.txt: unknown wnid {fields[1]!r}")
            test.append((base / "val" / "images" / fields[0], index[fields[1]]))
    return wnids, train, test


def fingerprint(base: Path, train: list[tuple[Path, int]], test: list[tuple[Path, int]]) -> str:
    h = hashlib.sha256(f"format {CACHE_FORMAT}\n".encode())
    for path, label in [*train, *test]:
        h.update(f"{path.relative_to(base)}\t{path.stat().st_size}\t{label}\n".encode())
    return h.hexdigest()[:16]


def decode(path: Path) -> np.ndarray:
    """One JPEG as a 3 x 64 x 64 uint8 array."""
    try:
        from PIL import Image
    except ImportError:
        raise DatasetMissingError("dataset 'tiny-imagenet' needs Pillow to decode JPEGs: pip install pillow") from None
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    if arr.shape != (64, 64, 3):
        raise DatasetMissingError(f"{path}: expected a 64x64 image, got {arr.shape[1]}x{arr.shape[0]}")
    return arr.transpose(2, 0, 1)


def decode_all(files: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((len(files), 3, 64, 64), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow frees the GIL
        for i, arr in enumerate(pool.map(decode, [path for path, _ in files])):
            x[i] = arr
    return x, np.array([label for _, label in files], dtype=np.int64)


def writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_arrays(base: Path, train: list, test: list) -> dict[str, np.ndarray]:
    """The four decoded arrays, from the .npy cache when present, else decoded and cached."""
    stem = f"bench-tiny-imagenet-{fingerprint(base, train, test)}"
    folders = [base, default_cache_dir() / "datasets"]
    for folder in folders:
        paths = {k: folder / f"{stem}-{k}.npy" for k in PARTS}
        if all(p.is_file() for p in paths.values()):
            return {k: np.load(p) for k, p in paths.items()}
    arrays = dict(zip(PARTS, (*decode_all(train), *decode_all(test))))
    for folder in folders if writable(base) else folders[1:]:
        try:
            for k, a in arrays.items():
                save_atomic(folder / f"{stem}-{k}.npy", a)
            break
        except OSError:  # not writable after all (or full): try the next place, else do not cache
            continue
    return arrays


def incomplete(base: Path, what: str) -> DatasetMissingError:
    hint = fetch_hint("tiny-imagenet")
    return DatasetMissingError(f"dataset 'tiny-imagenet' at {base} is incomplete ({what}): {hint}")


@DATASETS.register("tiny-imagenet", params=NoParams, version=1, sizes=(100000, 10000), nominal=((3, 64, 64), 200))  # classes: from its files
def tiny_imagenet(p: NoParams, roots: list[Path]) -> DatasetSplits:
    """Tiny ImageNet: 100k/10k colour 64x64 images, 200 classes (official val = test; cached .npy)."""
    found = locate(roots, {"wnids": ("wnids.txt", ""), "val": ("val/val_annotations.txt", "")}, SUBDIRS)
    if found is None:
        raise not_found("tiny-imagenet", roots, SUBDIRS)
    base = found["wnids"].parent
    wnids, train, test = list_files(base)
    if not train or not test:
        raise incomplete(base, f"{len(train)} train and {len(test)} val images found")
    try:
        a = {k: torch.from_numpy(v) for k, v in cached_arrays(base, train, test).items()}
    except FileNotFoundError as e:  # a JPEG named in val_annotations.txt is absent
        raise incomplete(base, f"{e.filename} is missing") from None
    info = DatasetInfo("tiny-imagenet", len(wnids), (3, 64, 64), MEAN, STD)
    return DatasetSplits(info, a["train_x"], a["train_y"], a["test_x"], a["test_y"], source=str(base))
