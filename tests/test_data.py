"""Fashion-MNIST reader on files written in the real IDX format; splits; on-device augmentation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.errors import DatasetMissingError
from bench.data import fashion_mnist as fm
from bench.data.idx import read_idx, write_idx
from bench.data.loader import augment, batches, split_indices


def fake_fashion(root: Path, n_train: int = 20, n_test: int = 8, compress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    d = root / "fashion-mnist"
    d.mkdir(parents=True)
    rng = np.random.RandomState(0)
    train = rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8)
    labels = (np.arange(n_train) % 10).astype(np.uint8)
    write_idx(d / ("train-images-idx3-ubyte" + (".gz" if compress else "")), train, compress)
    write_idx(d / ("train-labels-idx1-ubyte" + (".gz" if compress else "")), labels, compress)
    write_idx(d / ("t10k-images-idx3-ubyte" + (".gz" if compress else "")), train[:n_test], compress)
    write_idx(d / ("t10k-labels-idx1-ubyte" + (".gz" if compress else "")), labels[:n_test], compress)
    return train, labels


def test_idx_header_is_big_endian_with_magic_2051(tmp_path: Path) -> None:
    write_idx(tmp_path / "x.gz", np.zeros((3, 28, 28), np.uint8))
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    assert int.from_bytes(raw[:4], "big") == 2051 and int.from_bytes(raw[4:8], "big") == 3
    write_idx(tmp_path / "y.gz", np.zeros(3, np.uint8))
    assert int.from_bytes(gzip.decompress((tmp_path / "y.gz").read_bytes())[:4], "big") == 2049


@pytest.mark.parametrize("compress", [True, False])
def test_reader_round_trips_both_layouts(tmp_path: Path, compress: bool) -> None:
    train, labels = fake_fashion(tmp_path, compress=compress)
    splits = fm.fashion_mnist(fm.FashionMNISTParams(verify=False), [tmp_path])
    assert splits.train_x.shape == (20, 1, 28, 28) and splits.train_x.dtype == torch.uint8
    assert np.array_equal(splits.train_x[:, 0].numpy(), train)
    assert splits.train_y.tolist() == labels.tolist() and splits.test_y.dtype == torch.int64
    assert splits.info.num_classes == 10


def test_checksums_reject_files_that_are_not_the_official_ones(tmp_path: Path) -> None:
    fake_fashion(tmp_path)
    with pytest.raises(DatasetMissingError, match="checksum mismatch"):
        fm.fashion_mnist(fm.FashionMNISTParams(verify=True), [tmp_path])


def test_missing_dataset_is_one_actionable_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError) as info:
        fm.fashion_mnist(fm.FashionMNISTParams(), [tmp_path / "nowhere"])
    message = str(info.value)
    assert "\n" not in message and "fashion-mnist" in message and str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_truncated_idx_file_is_rejected(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", np.zeros((2, 4, 4), np.uint8), compress=False)
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-3])
    with pytest.raises(ValueError, match="size mismatch"):
        read_idx(tmp_path / "x")


def test_split_is_seeded_disjoint_and_complete() -> None:
    tr, val = split_indices(100, 0.1, 42)
    assert len(tr) == 90 and len(val) == 10
    assert set(tr) | set(val) == set(range(100)) and not set(tr) & set(val)
    assert np.array_equal(split_indices(100, 0.1, 42)[1], val)
    assert not np.array_equal(split_indices(100, 0.1, 43)[1], val)


def test_augmentation_keeps_shapes_is_reproducible_and_varies_crops() -> None:
    x = torch.rand(64, 3, 8, 8)
    a = augment(x, 2, True, torch.Generator().manual_seed(0))
    b = augment(x, 2, True, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    shifted = sum(not torch.equal(a[i], x[i]) and not torch.equal(a[i], x[i].flip(2)) for i in range(64))
    assert shifted > 32  # most samples got a non-trivial crop
    crop_only = augment(x, 2, False, torch.Generator().manual_seed(1))
    # each crop is a shifted window of the zero-padded image: its centre 4x4 appears in the padded original
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(4):
        windows = padded[i].unfold(1, 8, 1).unfold(2, 8, 1)  # C x 5 x 5 x 8 x 8
        assert any(torch.equal(windows[:, r, c], crop_only[i]) for r in range(5) for c in range(5))


def test_flip_only_flips_or_keeps() -> None:
    x = torch.rand(32, 1, 5, 5)
    out = augment(x, 0, True, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(32)]
    kept = [torch.equal(out[i], x[i]) for i in range(32)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 32


def test_batches_cover_every_example_once_per_epoch() -> None:
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    y = torch.arange(10)
    seen = torch.cat([yb for _, yb in batches(x, y, 3, shuffle=True, g=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))
    xb, _ = next(batches(x, y, 4))
    assert xb.dtype == torch.float32 and float(xb.max()) <= 1.0
