"""Dataset plug-ins: each returns whole splits as uint8 tensors plus a DatasetInfo.

Where datasets are looked for, in order: ``--data-dir`` / ``$BENCH_DATA``, the user data directory
(``$XDG_DATA_HOME/bench``, else ``~/.local/share/bench``), and system locations such as
``/usr/share/datasets`` (where Debian's ``dataset-fashion-mnist`` package puts its files).
Adding a dataset (its contract, ``bench.registry.DatasetSpec``, and an example): ``bench/data/README.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.registry import DATASETS
from bench.types import DatasetInfo, DatasetSplits

SYSTEM_DATA_DIRS = (Path("/usr/share/datasets"),)


def user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "bench"


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for datasets, most specific first."""
    roots: list[Path] = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("BENCH_DATA"):
        roots.append(Path(os.environ["BENCH_DATA"]).expanduser())
    roots.append(user_data_dir())
    roots.extend(SYSTEM_DATA_DIRS)
    return list(dict.fromkeys(roots))


_CACHE: dict[tuple, DatasetSplits] = {}


def load_dataset(name: str, params: Any, data_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """Load (and memoise for this process) the dataset ``name`` with its params dataclass."""
    entry = DATASETS.get(name)
    key = (name, entry.version, params, tuple(str(r) for r in data_roots(data_dir)))
    if key not in _CACHE:
        _CACHE[key] = entry.fn(params, data_roots(data_dir))
    return _CACHE[key]


# Built-in datasets register on import.
from bench.data import cifar, fashion_mnist, mnist, svhn, synthetic, tiny_imagenet  # noqa: E402,F401

# the built-ins' classes, shape, mean and std known without reading their files (each dataset's spec ``info``)
STATIC_INFO = {e.name: e.info for e in DATASETS.entries() if isinstance(e.info, DatasetInfo)}
