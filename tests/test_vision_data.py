"""Vision dataset readers on tiny fakes written in each dataset's real on-disk format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bench.core.errors import ConfigError, DatasetMissingError
from bench.core.params import build
from bench.data import load_dataset, tiny_imagenet
from bench.data.cifar import cifar10, cifar100
from bench.data.idx import write_idx
from bench.data.mnist import MNISTParams, mnist
from bench.data.svhn import svhn
from bench.registry import DATASETS, NoParams


def _images(rng, n: int, shape=(3, 32, 32)) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _check(splits, n_train: int, n_test: int, shape, num_classes: int) -> None:
    assert splits.train_x.shape == (n_train, *shape) and splits.test_x.shape == (n_test, *shape)
    assert splits.train_x.dtype == splits.test_x.dtype == torch.uint8
    assert splits.train_y.dtype == splits.test_y.dtype == torch.int64
    assert splits.train_y.shape == (n_train,) and splits.test_y.shape == (n_test,)
    assert splits.info.shape == shape and splits.info.num_classes == num_classes
    assert len(splits.info.mean) == len(splits.info.std) == shape[0]


def _pickle(path, d) -> None:
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def fake_cifar10(root, per_batch: int = 4, n_test: int = 6, seed: int = 0):
    """A ``cifar-10-batches-py`` of 5 x ``per_batch`` train and ``n_test`` test images under ``root``."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir()
    n = 5 * per_batch
    x, y = _images(rng, n), rng.integers(0, 10, n)
    for i in range(5):  # 5 train batches; rows are the R, G, B planes flattened
        sl = slice(per_batch * i, per_batch * (i + 1))
        _pickle(base / f"data_batch_{i + 1}", {b"data": x[sl].reshape(per_batch, -1), b"labels": y[sl].tolist()})
    tx, ty = _images(rng, n_test), rng.integers(0, 10, n_test)
    _pickle(base / "test_batch", {b"batch_label": b"testing", b"data": tx.reshape(n_test, -1), b"labels": ty.tolist()})
    return x, y, tx, ty


def test_cifar10(tmp_path):
    x, y, tx, ty = fake_cifar10(tmp_path)

    for splits in (cifar10(NoParams(), [tmp_path]), load_dataset("cifar10", NoParams(), data_dir=tmp_path)):
        _check(splits, 20, 6, (3, 32, 32), 10)
        assert np.array_equal(splits.train_x.numpy(), x) and np.array_equal(splits.train_y.numpy(), y)
        assert np.array_equal(splits.test_x.numpy(), tx) and np.array_equal(splits.test_y.numpy(), ty)
        assert splits.info.mean == (0.4914, 0.4822, 0.4465) and splits.info.std == (0.2471, 0.2435, 0.2616)


def test_cifar100(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    x, y, tx, ty = _images(rng, 7), np.array([0, 99, 5, 42, 7, 99, 1]), _images(rng, 3), np.array([99, 0, 50])
    coarse = [0] * 7
    _pickle(base / "train", {b"data": x.reshape(7, -1), b"fine_labels": y.tolist(), b"coarse_labels": coarse})
    _pickle(base / "test", {b"data": tx.reshape(3, -1), b"fine_labels": ty.tolist(), b"coarse_labels": coarse[:3]})

    for splits in (cifar100(NoParams(), [tmp_path]), load_dataset("cifar100", NoParams(), data_dir=tmp_path)):
        _check(splits, 7, 3, (3, 32, 32), 100)
        assert np.array_equal(splits.train_x.numpy(), x) and np.array_equal(splits.train_y.numpy(), y)
        assert np.array_equal(splits.test_x.numpy(), tx) and np.array_equal(splits.test_y.numpy(), ty)


def test_svhn_labels_10_become_0(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(2)
    (tmp_path / "svhn").mkdir()
    data = {}
    for split, n in (("train", 12), ("test", 5)):
        x = _images(rng, n)
        y = np.arange(n) % 10 + 1  # 1..10, where 10 is the digit 0
        scipy_io.savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": y[:, None]})
        data[split] = (x, y % 10)

    for splits in (svhn(NoParams(), [tmp_path]), load_dataset("svhn", NoParams(), data_dir=tmp_path)):
        _check(splits, 12, 5, (3, 32, 32), 10)
        assert np.array_equal(splits.train_x.numpy(), data["train"][0])
        assert np.array_equal(splits.test_x.numpy(), data["test"][0])
        assert np.array_equal(splits.train_y.numpy(), data["train"][1])
        assert np.array_equal(splits.test_y.numpy(), data["test"][1])
        assert splits.train_y.min() == 0 and splits.train_y.max() == 9


def test_mnist_idx_in_torchvision_layout(tmp_path):
    rng = np.random.default_rng(3)
    base = tmp_path / "MNIST" / "raw"
    base.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": _images(rng, 6, (28, 28)),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 9, 8, 7], dtype=np.uint8),
        "t10k-images-idx3-ubyte": _images(rng, 4, (28, 28)),
        "t10k-labels-idx1-ubyte": np.array([3, 4, 5, 6], dtype=np.uint8),
    }
    for stem, a in arrays.items():
        write_idx(base / (stem + ".gz"), a)

    for splits in (mnist(MNISTParams(), [tmp_path]), load_dataset("mnist", MNISTParams(), data_dir=tmp_path)):
        _check(splits, 6, 4, (1, 28, 28), 10)
        assert np.array_equal(splits.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
        assert np.array_equal(splits.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
        assert splits.train_y.tolist() == [0, 1, 2, 9, 8, 7] and splits.test_y.tolist() == [3, 4, 5, 6]
        assert splits.info.mean == (0.1307,) and splits.info.std == (0.3081,)


def test_mnist_verify_is_refused_until_checksums_exist():
    assert MNISTParams().verify is False
    with pytest.raises(ConfigError, match="verify"):
        build(MNISTParams, {"verify": True}, "dataset")


# Tiny ImageNet: wnids.txt is not sorted; class indices follow the sorted wnids (ImageFolder order).
WNIDS = ["n03", "n01", "n02"]
COLOURS = {"n01": (200, 30, 30), "n02": (30, 200, 30), "n03": (30, 30, 200)}
VAL = [("val_0.JPEG", "n02", "RGB"), ("val_1.JPEG", "n03", "RGB"), ("val_2.JPEG", "n01", "L")]


def _tiny_imagenet(root):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for w in WNIDS:
        (base / "train" / w / "images").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), COLOURS[w]).save(base / "train" / w / "images" / f"{w}_{i}.JPEG", quality=95)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for name, w, mode in VAL:
        colour = COLOURS[w] if mode == "RGB" else 120
        Image.new(mode, (64, 64), colour).save(base / "val" / "images" / name, quality=95)
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def test_tiny_imagenet_reads_and_caches(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    base = _tiny_imagenet(tmp_path)
    splits = load_dataset("tiny-imagenet", NoParams(), data_dir=tmp_path)
    _check(splits, 6, 3, (3, 64, 64), 3)
    assert splits.train_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert splits.test_y.tolist() == [1, 2, 0]
    for x, y in zip(splits.train_x, splits.train_y):  # JPEG is lossy: flat colours come back within 2
        expected = torch.tensor(COLOURS[sorted(WNIDS)[y]], dtype=torch.int16).view(3, 1, 1)
        assert (x.to(torch.int16) - expected).abs().max() <= 2
    grey = splits.test_x[2].to(torch.int16)  # a grayscale JPEG comes back as RGB
    assert (grey - 120).abs().max() <= 2
    assert len(list(base.glob("bench-tiny-imagenet-*.npy"))) == 4

    def no_decoding(path):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(tiny_imagenet, "decode", no_decoding)
    again = tiny_imagenet.tiny_imagenet(NoParams(), [tmp_path])
    assert torch.equal(again.train_x, splits.train_x) and torch.equal(again.test_y, splits.test_y)


def test_tiny_imagenet_caches_in_user_cache_when_read_only(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    base = _tiny_imagenet(tmp_path / "data")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tiny_imagenet, "writable", lambda folder: False)
    splits = tiny_imagenet.tiny_imagenet(NoParams(), [tmp_path / "data"])
    assert splits.info.num_classes == 3
    assert not list(base.glob("*.npy"))
    assert len(list((tmp_path / "cache" / "datasets").glob("bench-tiny-imagenet-*.npy"))) == 4

    (base / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(DatasetMissingError, match="incomplete.*val_1.JPEG"):
        tiny_imagenet.tiny_imagenet(NoParams(), [tmp_path / "data"])


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet"])
def test_missing_dataset_is_one_line_with_fetch_hint(tmp_path, name):
    entry = DATASETS.get(name)
    with pytest.raises(DatasetMissingError) as info:
        entry.fn(entry.params(), [tmp_path / "a", tmp_path / "b"])
    message = str(info.value)
    assert "\n" not in message
    assert repr(name) in message and str(tmp_path / "b") in message
    assert f"run `bench data fetch {name}` for download or manual steps" in message
