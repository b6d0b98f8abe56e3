"""Files written safely: atomic writes (temporary name, fsync, ``os.replace``), JSON, sha256, the cache's home."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from bench.core.faults import fault_point


def default_cache_dir() -> Path:
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bench"


def atomic_write_bytes(path: Path, data: bytes, fault: str = "") -> None:
    """Write a file via a temporary name, fsync and ``os.replace``: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            fault_point(fault)  # the crash tests kill here, half-way through a write
            f.write(data[len(data) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
