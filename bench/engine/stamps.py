"""Stamps: a cheap record that an entry was verified, so that a finished cache is not re-read on every run.

A full check of an entry (``Store.problem``) hashes every file and parses it (``.pt`` loaded with
``weights_only=True``): its cost grows with the cache's bytes. Once an entry has passed it, the store
keeps a *stamp* of it in ``stamps/<kind>-<key>``: the sha256 of its ``ENTRY`` file, and for every
file of the entry (``ENTRY`` included) its size, ``mtime_ns``, ``ctime_ns`` and inode. Later, in any
process, an entry whose files all still have their stamped ``stat`` and whose ``ENTRY`` still has
its stamped digest is trusted without reading its bytes; any difference sends it back to the full
check (and a damaged entry is then reported and recomputed, as before).

What the stamp catches without a full read: a file truncated, extended, rewritten or edited in place
(its size or ``mtime``/``ctime`` change: a write always sets ``ctime``, and ``ctime`` cannot be set
back by hand), deleted, replaced by another file or a copy (new inode), and any edit of ``ENTRY``
(including a hand-edited file whose checksums were updated). What only ``bench cache verify`` (a full
read) catches: bytes changed without going through the file system (bit rot on the disk, a write to
the raw device) and edits made with the system clock set back.

Racy stamps (as in git's index): a verification reads the files after looking at their ``stat``; an
edit during that window within the same timestamp tick would leave a stamp that matches bytes that
were not verified. So a stamp is only written when every file's ``ctime`` is at least ``RACY_S``
older than the start of the verification; a younger entry is verified fully again next time. The
process writing an entry stamps it as it commits it (nobody else writes into its private folder),
``TICK_S`` after its last write so that a later edit cannot share that write's timestamp.

Stamps are written atomically (temporary name, ``os.replace``): concurrent processes may both write
one, and either is right. A missing, unreadable or stale stamp only costs a full check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from pathlib import Path

from bench.core.files import atomic_write_text

RACY_S = float(os.environ.get("BENCH_STAMP_RACY_S", "1.0"))
TICK_S = 0.02  # longer than a file system timestamp tick (Linux: one jiffy, at most 10 ms)
ENTRY = "ENTRY"  # the file of an entry that lists its files and their sha256 (the store's commit record)


def stamp_path(root: Path, kind: str, key: str) -> Path:
    return root / "stamps" / f"{kind}-{key}"


def _stats(folder: Path, names: list[str]) -> dict[str, list[int]] | None:
    """size, mtime_ns, ctime_ns, inode of each file (None when one is missing or not a file)."""
    out = {}
    for name in [ENTRY, *names]:
        try:
            st = os.stat(folder / name)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        out[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return out


def _entry(folder: Path) -> tuple[str, list[str]] | None:
    """The digest of ``ENTRY`` and the names of the files it records (None if unreadable)."""
    try:
        data = (folder / ENTRY).read_bytes()
        files = json.loads(data)["files"]
        return hashlib.sha256(data).hexdigest(), sorted(files)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def snapshot(folder: Path) -> dict | None:
    """What a stamp of ``folder`` records now (None when it cannot be stamped)."""
    entry = _entry(folder)
    if entry is None:
        return None
    stats = _stats(folder, entry[1])
    return None if stats is None else {"entry": entry[0], "files": stats}


def settled(folder: Path, written_ns: int) -> dict | None:
    """The writer's stamp of its private folder, taken once ``TICK_S`` has passed since its last write
    (``written_ns``), so that any later edit gets a newer timestamp than the one stamped. None on a
    file system that keeps whole seconds only (then the entry is stamped when it is first verified)."""
    time.sleep(max(0.0, (written_ns - time.time_ns()) / 1e9 + TICK_S))
    stamp = snapshot(folder)
    if stamp is None or all(s[1] % 1_000_000_000 == 0 and s[2] % 1_000_000_000 == 0 for s in stamp["files"].values()):
        return None
    return stamp


def trusted(root: Path, kind: str, key: str, folder: Path) -> bool:
    """Whether the entry's stamp exists and still matches its files (no bytes of the entry are read but ``ENTRY``)."""
    try:
        stamp = json.loads(stamp_path(root, kind, key).read_text())
    except (OSError, ValueError):
        return False
    return stamp == snapshot(folder)


def write(root: Path, kind: str, key: str, stamp: dict | None, started_ns: int | None = None) -> bool:
    """Record ``stamp`` (taken before the entry was verified, see :func:`snapshot`), unless the entry
    changed since it was taken or is too young to stamp safely (``started_ns``: when the check began;
    None for the entry's own writer). Returns whether a stamp was written."""
    if stamp is None or snapshot(root / kind / key) != stamp:
        return False
    if started_ns is not None and max(s[2] for s in stamp["files"].values()) > started_ns - RACY_S * 1e9:
        return False  # racy: changed too shortly before the check; verify it fully again next time
    with contextlib.suppress(OSError):
        atomic_write_text(stamp_path(root, kind, key), json.dumps(stamp, sort_keys=True))
        return True
    return False


def forget(root: Path, kind: str, key: str) -> None:
    with contextlib.suppress(OSError):
        stamp_path(root, kind, key).unlink()


def now_ns() -> int:
    return time.time_ns()
