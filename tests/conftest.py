"""Shared fixtures. CPU only, fixed seeds, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

import bench  # noqa: F401  (registers the built-in plug-ins)
from bench.data import data_roots
from bench.data.fashion_mnist import FILES, SUBDIRS, locate

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"

torch.set_num_threads(min(2, torch.get_num_threads()))

# Property tests are reproducible in CI: the same examples every run, no example database on disk;
# each test sets its own max_examples. No deadline: the 2-core CI machine is shared.
settings.register_profile("bench", derandomize=True, database=None, deadline=None)
settings.load_profile("bench")


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {"cache": tmp_path / "cache", "results": tmp_path / "results"}


@pytest.fixture
def fmnist() -> None:
    """Skip when Fashion-MNIST is absent, unless BENCH_REQUIRE_REAL_DATA=1 (CI), where it fails."""
    if locate(data_roots(), FILES, SUBDIRS) is None:
        message = "Fashion-MNIST files not found (scripts/setup installs them)"
        if os.environ.get("BENCH_REQUIRE_REAL_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)


# A minimal valid suite (synthetic data, tiny model) that tests vary by string replacement.
MINIMAL_SUITE = """\
name: t
dataset: synthetic
model: tiny_cnn
threat: {norm: Linf, eps: 8/255}
train: {epochs: 1}
defences: [standard]
attacks: [fgsm]
"""


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
