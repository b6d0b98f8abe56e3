"""Stamps: a verified entry is trusted from its files' stat in later processes, and any change to it
(an edit of the same size, a truncation, a hand-edited ENTRY) sends it back to the full check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.core.files import sha256_file
from bench.engine import stamps
from bench.engine.store import ENTRY, CorruptEntryError, Store
from tests.conftest import ROOT

# has() in a fresh process, counting full checks and weight loads
PROBE = """
import sys, torch
from bench.engine.store import Store
checks, loads = [], []
problem, load = Store.problem, torch.load
Store.problem = lambda self, *a: checks.append(a) or problem(self, *a)
torch.load = lambda *a, **k: loads.append(1) or load(*a, **k)
print(Store(sys.argv[1], log=print).has("train", "k"), len(checks), len(loads))
"""


def probe(cache: Path, racy_s: str = "1.0") -> tuple[str, int, int]:
    env = {**os.environ, "BENCH_STAMP_RACY_S": racy_s}
    out = subprocess.run([sys.executable, "-c", PROBE, str(cache)], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120)
    has, checks, loads = out.stdout.splitlines()[-1].split()
    return has, int(checks), int(loads)


def entry(cache: Path) -> Path:
    store = Store(cache)
    with store.writer("train", "k") as tmp:
        (tmp / "weights").mkdir()
        torch.save({"w": torch.arange(1000, dtype=torch.float32)}, tmp / "weights" / "last.pt")
        (tmp / "spec.json").write_text(json.dumps({"seed": 0}))
    return store.path("train", "k")


def test_a_finished_entry_is_not_read_again_in_a_new_process(tmp_path: Path) -> None:
    entry(tmp_path / "c")
    assert (tmp_path / "c" / "stamps" / "train-k").is_file()  # stamped by its writer
    assert probe(tmp_path / "c") == ("True", 0, 0)
    # the counts can fail: without the stamp, the entry is checked fully (hashed, weights loaded), and stamped
    shutil.rmtree(tmp_path / "c" / "stamps")
    assert probe(tmp_path / "c", racy_s="0") == ("True", 1, 1)
    assert stamps.trusted(tmp_path / "c", "train", "k", tmp_path / "c" / "train" / "k")


def test_an_entry_changed_just_before_its_check_is_not_stamped(tmp_path: Path) -> None:
    entry(tmp_path / "c")
    shutil.copytree(tmp_path / "c", tmp_path / "copy")  # new inodes: the copied stamps do not match
    folder = tmp_path / "copy" / "train" / "k"
    assert not stamps.trusted(tmp_path / "copy", "train", "k", folder)
    stamps.RACY_S, racy = 3600.0, stamps.RACY_S  # every file changed "just before" the check
    try:
        assert Store(tmp_path / "copy").has("train", "k")
        assert not stamps.trusted(tmp_path / "copy", "train", "k", folder)
        stamps.RACY_S = 0.0
        assert Store(tmp_path / "copy").has("train", "k")
        assert stamps.trusted(tmp_path / "copy", "train", "k", folder)
    finally:
        stamps.RACY_S = racy


def flip_keeping_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back: ctime still moves


@pytest.mark.parametrize("how", ["flip", "flip, mtime set back", "truncate", "delete"])
def test_a_changed_file_is_checked_again_and_refused(tmp_path: Path, how: str) -> None:
    folder = entry(tmp_path / "c")
    target = folder / "weights" / "last.pt"
    size = target.stat().st_size
    if how == "flip":
        data = bytearray(target.read_bytes())
        data[size // 2] ^= 0x5A
        target.write_bytes(bytes(data))
        assert target.stat().st_size == size
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[: size // 2])
    elif how == "delete":
        target.unlink()
    else:
        flip_keeping_mtime(target)
    logged: list[str] = []
    assert not Store(tmp_path / "c", log=logged.append).has("train", "k")
    assert len(logged) == 1 and "is damaged" in logged[0] and ("sha256 mismatch" in logged[0] or "missing" in logged[0])
    assert not folder.exists() and not stamps.stamp_path(tmp_path / "c", "train", "k").exists()


def test_a_hand_edited_weights_file_with_updated_checksums_is_refused(tmp_path: Path) -> None:
    folder = entry(tmp_path / "c")
    target = folder / "weights" / "last.pt"
    target.write_bytes(b"not a weights file")
    recorded = json.loads((folder / ENTRY).read_text())
    recorded["files"]["weights/last.pt"] = sha256_file(target)
    (folder / ENTRY).write_text(json.dumps(recorded))
    logged: list[str] = []
    assert not Store(tmp_path / "c", log=logged.append).has("train", "k")
    assert len(logged) == 1 and "not a plain weights file" in logged[0]


def test_bytes_changed_under_a_matching_stamp_are_caught_when_read_and_checked_fully_next_time(tmp_path: Path) -> None:
    """What a stamp cannot see (bit rot: the bytes change, the stat does not), emulated by re-stamping
    after an edit: the sha256 check of the bytes read refuses them and drops the stamp."""
    folder = entry(tmp_path / "c")
    target = folder / "weights" / "last.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x5A
    target.write_bytes(bytes(data))
    stamps.write(tmp_path / "c", "train", "k", stamps.snapshot(folder))  # forged: as if nothing had changed
    store = Store(tmp_path / "c", log=lambda m: None)
    assert store.has("train", "k")  # trusted from the stamp: the documented limit
    with pytest.raises(CorruptEntryError, match="sha256 mismatch"):
        store.load_weights("train", "k", "weights/last.pt", torch.device("cpu"))
    assert not stamps.stamp_path(tmp_path / "c", "train", "k").exists()
    assert not Store(tmp_path / "c", log=lambda m: None).has("train", "k")


def test_cache_verify_reads_everything_and_stamps_what_is_intact(tmp_path: Path) -> None:
    from bench.commands.cache import verify

    folder = entry(tmp_path / "c")
    stamps.forget(tmp_path / "c", "train", "k")
    store = Store(tmp_path / "c")
    checked: list[str] = []
    real = store.problem
    store.problem = lambda *a: checked.append(a[1]) or real(*a)  # type: ignore[method-assign]
    stamps.RACY_S, racy = 0.0, stamps.RACY_S
    try:
        assert verify(store, lambda m: None) == 0
    finally:
        stamps.RACY_S = racy
    assert checked == ["k"] and stamps.trusted(tmp_path / "c", "train", "k", folder)
