"""Content-addressed artefact store: ``<root>/{train,eval}/<key>/`` with a ``DONE`` marker.

An entry exists only once ``DONE`` is present. Entries are written into a temporary directory
beside the final one and renamed into place (atomic on one file system); a job that raises leaves
nothing behind, so failures are never cached.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

DONE = "DONE"


def default_cache_dir() -> Path:
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bench"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file via a temporary name and ``os.replace``, never in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class Store:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / DONE).is_file()

    @contextlib.contextmanager
    def writer(self, kind: str, key: str) -> Iterator[Path]:
        """Yield a fresh temporary directory; on success it becomes ``<kind>/<key>``, else it is removed."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            yield tmp
            (tmp / DONE).write_text("")
            if final.exists():
                if (final / DONE).is_file():  # someone else finished first: keep theirs
                    shutil.rmtree(tmp)
                    return
                shutil.rmtree(final)  # an incomplete leftover, never a valid entry
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def read_json(self, kind: str, key: str, name: str) -> Any:
        return read_json(self.path(kind, key) / name)

    def load_weights(self, kind: str, key: str, name: str, device: torch.device) -> dict[str, torch.Tensor]:
        return torch.load(self.path(kind, key) / name, map_location=device, weights_only=True)
