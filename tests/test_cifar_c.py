"""The CIFAR-10-C / CIFAR-100-C reader on small files written in the released layout (3 test images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.commands.cli import main
from bench.core.errors import DatasetMissingError
from bench.data import cifar_c

N = 3  # test images per severity


def release(root: Path, folder: str = "CIFAR-10-C", corruptions=("gaussian_noise", "fog")) -> Path:
    """Files as released: <corruption>.npy uint8 (5N, 32, 32, 3), severities 1..5 stacked; labels.npy uint8 (5N,)."""
    d = root / folder
    d.mkdir(parents=True)
    for k, name in enumerate(corruptions):
        arr = np.zeros((5 * N, 32, 32, 3), dtype=np.uint8)
        for s in range(5):
            for i in range(N):
                arr[s * N + i, :, :, 0] = 10 * (s + 1) + i  # red = 10 x severity + test id
                arr[s * N + i, :, :, 1] = k  # green = which corruption
                arr[s * N + i, 0, 1, 2] = 200  # blue: one marked pixel at row 0, column 1
        np.save(d / f"{name}.npy", arr)
    np.save(d / "labels.npy", np.tile(np.arange(N, dtype=np.uint8) + 4, 5))
    return d


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_each_severity_is_its_block_of_the_test_split_in_order(tmp_path, severity):
    release(tmp_path)
    x, y = cifar_c.read("cifar10", "fog", severity, [tmp_path])
    assert x.dtype == torch.uint8 and x.shape == (N, 3, 32, 32) and y.dtype == torch.int64
    assert x[:, 0, 5, 5].tolist() == [10 * severity + i for i in range(N)]
    assert x[:, 1].unique().tolist() == [1]  # fog, the second file
    assert x[0, 2, 0, 1] == 200 and x[0, 2, 1, 0] == 0  # N x H x W x C -> N x C x H x W, not transposed
    assert y.tolist() == [4, 5, 6]
    x2, y2 = cifar_c.read("cifar10", "gaussian_noise", severity, [tmp_path], n=2)
    assert x2[:, 0, 0, 0].tolist() == [10 * severity, 10 * severity + 1] and y2.tolist() == [4, 5]


def test_folders_are_found_under_the_data_roots_like_the_datasets(tmp_path):
    release(tmp_path / "second" / "cifar100", "CIFAR-100-C")
    roots = [tmp_path / "first", tmp_path / "second"]
    assert cifar_c.locate("cifar100", roots) == tmp_path / "second" / "cifar100" / "CIFAR-100-C"
    assert cifar_c.locate("cifar10", roots) is None
    x, _ = cifar_c.read("cifar100", "gaussian_noise", 2, roots)
    assert x[:, 0, 0, 0].tolist() == [20, 21, 22]


def one_line(call) -> str:
    with pytest.raises(DatasetMissingError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_missing_folder_or_file_names_it(tmp_path):
    text = one_line(lambda: cifar_c.read("cifar10", "fog", 1, [tmp_path]))
    assert f"searched {tmp_path / 'CIFAR-10-C'}" in text and "zenodo.org/record/2535967" in text
    d = release(tmp_path)
    assert one_line(lambda: cifar_c.read("cifar10", "snow", 1, [tmp_path])) == f"{d / 'snow.npy'}: missing"


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5 * N, 3, 32, 32), np.uint8), "shape (15, 3, 32, 32), expected N x 32 x 32 x 3 (the released layout)"),
        (np.zeros((5 * N, 32, 32), np.uint8), "shape (15, 32, 32), expected N x 32 x 32 x 3 (the released layout)"),
        (np.zeros((7, 32, 32, 3), np.uint8), "7 rows, not 5 severities of the test split stacked"),
        (np.zeros((5 * N, 32, 32, 3), np.float32), "dtype float32, expected uint8"),
        (np.zeros((10, 32, 32, 3), np.uint8), "10 images for 15 labels in labels.npy"),
    ],
)
def test_a_wrong_array_gives_one_line_naming_the_file(tmp_path, array, message):
    d = release(tmp_path)
    np.save(d / "fog.npy", array)
    assert one_line(lambda: cifar_c.read("cifar10", "fog", 1, [tmp_path])) == f"{d / 'fog.npy'}: {message}"


def test_bad_labels_and_a_non_npy_file(tmp_path):
    d = release(tmp_path)
    np.save(d / "labels.npy", np.zeros((5 * N, 2), np.uint8))
    assert one_line(lambda: cifar_c.read("cifar10", "fog", 1, [tmp_path])).startswith(f"{d / 'labels.npy'}: shape (15, 2)")
    (d / "labels.npy").unlink()
    release(tmp_path / "other")
    (tmp_path / "other" / "CIFAR-10-C" / "fog.npy").write_bytes(b"garbage")
    assert one_line(lambda: cifar_c.read("cifar10", "fog", 1, [tmp_path / "other"])).startswith(
        f"{tmp_path / 'other' / 'CIFAR-10-C' / 'fog.npy'}: not a .npy array"
    )


def test_arguments_are_checked(tmp_path):
    release(tmp_path)
    assert "unknown corruption 'fogg'" in one_line(lambda: cifar_c.read("cifar10", "fogg", 1, [tmp_path]))
    assert "severity 6: expected 1 to 5" in one_line(lambda: cifar_c.read("cifar10", "fog", 6, [tmp_path]))
    assert "no released corruption files for 'svhn'" in one_line(lambda: cifar_c.read("svhn", "fog", 1, [tmp_path]))


def test_bench_data_status_lists_the_corruption_sets(tmp_path, capsys):
    d = release(tmp_path)
    assert main(["data", "status", "cifar10-c", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cifar10-c      ok: 2/15 corruptions (missing: shot_noise, ") and str(d) in out
    assert main(["data", "status", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("cifar10-c      ok: 2/15") and lines[-1].startswith("cifar100-c     missing: dataset CIFAR-100-C not found")
