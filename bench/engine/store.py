"""The store: the only state shared between processes, GPUs and cluster nodes.

Layout under the cache root::

    <kind>/<key>/          complete entries, immutable (the kinds and their files: bench/plan/kinds.py)
    <kind>/<key>/ENTRY     the commit marker: JSON with the sha256 of every file of the entry
    claims/<kind>-<key>    who is computing an entry now (host, pid), a lease renewed by a heartbeat
    partial/<kind>-<key>/  resumable state of an entry being computed (training checkpoints, ...)
    tmp/                   entries being written; renamed into place when complete
    stamps/<kind>-<key>    the stat of an entry's files when it was last verified (bench/engine/stamps.py)

* **Atomic, verified entries.** A task writes into a fresh folder under ``tmp/``; on success the
  store records the sha256 of every file in ``ENTRY`` and renames the folder into place. An entry
  exists only with its ``ENTRY``. Every read checks the bytes it parses against the recorded hash;
  an entry that fails (truncated, flipped bytes, a file deleted or replaced) is reported in one line,
  moved out of the way and recomputed, never used. Weights load with ``weights_only=True``.
* **Verification that does not grow with the bytes.** An entry is checked fully (every file hashed
  and parsed) when it is written, by ``bench cache verify``, and the first time a process meets it
  after it changed; otherwise its *stamp* (size, mtime, ctime and inode of each file and the digest
  of ``ENTRY``) is trusted and ``has()`` reads only ``ENTRY``. "Damaged" without a full read means:
  truncated, extended, rewritten or edited in place (size or mtime/ctime differ), deleted, replaced
  or copied (new inode), or ``ENTRY`` edited (a hand-edited ``.pt`` with its checksums updated). Only
  a full read (``bench cache verify``, or the sha256 check of the bytes a task reads, which then drops
  the stamp) catches bytes changed under the file system (bit rot) or edits with the clock set back.
* **Claims.** A task is claimed before it runs: a claim file created exclusively, its mtime renewed
  by a heartbeat thread. It expires when its holder dies: at once when the holder is a dead process
  on this host, otherwise when the heartbeat stops for ``lease`` seconds (another node). Claim
  creation and takeover happen under one short ``flock`` so two processes never both win.
* Generic: the store verifies and commits whatever files an entry has; which files each kind's entry
  holds, and their typed reads and writes, are declared with the kinds (``bench/plan/kinds.py``,
  ``bench/engine/entries.py``). It accepts only declared kinds.
* Failures are never cached: a task that raises leaves its ``tmp/`` folder removed and no entry.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.core.files import sha256_file
from bench.engine import stamps
from bench.engine.stamps import ENTRY
from bench.plan.kinds import KINDS

LEASE_S = float(os.environ.get("BENCH_CLAIM_LEASE", "120"))
HEARTBEAT_S = max(0.5, LEASE_S / 8)
HOST = socket.gethostname()


class CorruptEntryError(BenchError):
    """A cache entry failed its integrity check; it is never used."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class ClaimInfo:
    host: str
    pid: int
    started: float
    token: str
    age_s: float  # seconds since the last heartbeat

    @property
    def alive(self) -> bool:
        if self.host == HOST:
            return pid_alive(self.pid)
        return self.age_s < LEASE_S

    def where(self) -> str:
        return f"{self.host} pid {self.pid}"


class Store:
    """Entries, claims and partial state under one cache root (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, log: Callable[[str], None] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._verified: set[tuple[str, str]] = set()
        self._held: dict[Path, str] = {}  # claim path -> our token
        self._heartbeat: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ entries
    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        """Whether a complete, intact entry exists; a damaged one is reported, removed and is absent."""
        if (kind, key) in self._verified:
            return True
        folder = self.path(kind, key)
        if not (folder / ENTRY).is_file():
            return False
        if stamps.trusted(self.root, kind, key, folder):  # verified before and unchanged since: no bytes read
            self._verified.add((kind, key))
            return True
        problem = self.verify(kind, key)
        if problem is None:
            self._verified.add((kind, key))
            return True
        self.log(f"cache: {kind}/{key[:12]} is damaged ({problem}); it will be recomputed")
        self.discard(kind, key)
        return False

    def verify(self, kind: str, key: str) -> str | None:
        """The full check (:meth:`problem`: every byte hashed and parsed); on success the entry is stamped
        (``bench/engine/stamps.py``) so that later processes trust it without reading it again."""
        started, before = stamps.now_ns(), stamps.snapshot(self.path(kind, key))
        problem = self.problem(kind, key)
        if problem is None:
            stamps.write(self.root, kind, key, before, started)
        return problem

    def files(self, kind: str, key: str) -> dict[str, str]:
        """The entry's recorded files and their sha256 (raises CorruptEntryError if unreadable)."""
        try:
            recorded = json.loads((self.path(kind, key) / ENTRY).read_text())
            files = recorded["files"]
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise ValueError("no file list")
            return files
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CorruptEntryError(f"{kind}/{key[:12]}: unreadable {ENTRY} ({type(e).__name__})") from None

    def problem(self, kind: str, key: str) -> str | None:
        """None when every recorded file is present, has its recorded sha256 and parses as what it
        claims to be (JSON, ``.npz`` without pickles, ``.pt`` loadable with ``weights_only``), else
        what is wrong. The parse catches an entry edited by hand with its checksums updated."""
        try:
            files = self.files(kind, key)
            for name in sorted(files):
                self._parse(kind, key, name)
        except CorruptEntryError as e:
            return str(e).split(": ", 1)[1]
        return None

    def _parse(self, kind: str, key: str, name: str) -> None:
        if name.endswith(".json"):
            self.read_json(kind, key, name)
        elif name.endswith(".jsonl"):
            for i, line in enumerate(self.read_bytes(kind, key, name).splitlines()):
                try:
                    json.loads(line)
                except ValueError:
                    raise CorruptEntryError(f"{kind}/{key[:12]}: {name}: line {i + 1} is not valid JSON") from None
        elif name.endswith(".npz"):
            self.read_npz(kind, key, name)
        elif name.endswith(".pt"):
            self.load_weights(kind, key, name, torch.device("cpu"))
        else:
            self.read_bytes(kind, key, name)

    def read_bytes(self, kind: str, key: str, name: str) -> bytes:
        """A file of an entry, checked against its recorded sha256 (the bytes checked are the bytes used)."""
        digest = self.files(kind, key).get(name)
        if digest is None:
            raise CorruptEntryError(f"{kind}/{key[:12]}: {name} is not recorded in the entry")
        try:
            data = (self.path(kind, key) / name).read_bytes()
        except OSError:
            raise CorruptEntryError(f"{kind}/{key[:12]}: {name} is missing") from None
        if hashlib.sha256(data).hexdigest() != digest:  # damaged without a stat change (bit rot): check it fully next time
            self._verified.discard((kind, key))
            stamps.forget(self.root, kind, key)
            raise CorruptEntryError(f"{kind}/{key[:12]}: {name}: sha256 mismatch (damaged or edited)")
        return data

    def read_json(self, kind: str, key: str, name: str) -> Any:
        try:
            return json.loads(self.read_bytes(kind, key, name))
        except ValueError:
            raise CorruptEntryError(f"{kind}/{key[:12]}: {name} is not valid JSON") from None

    def read_npz(self, kind: str, key: str, name: str) -> dict[str, np.ndarray]:
        try:
            with np.load(io.BytesIO(self.read_bytes(kind, key, name)), allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (ValueError, OSError, EOFError) as e:
            raise CorruptEntryError(f"{kind}/{key[:12]}: {name} is not a valid .npz ({type(e).__name__})") from None

    def load_weights(self, kind: str, key: str, name: str, device: torch.device) -> dict[str, torch.Tensor]:
        data = self.read_bytes(kind, key, name)
        try:
            return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - weights_only refuses code-running pickles with various errors
            raise CorruptEntryError(f"{kind}/{key[:12]}: {name} is not a plain weights file ({type(e).__name__})") from None

    @contextlib.contextmanager
    def writer(self, kind: str, key: str) -> Iterator[Path]:
        """Yield a fresh folder; on success it becomes ``<kind>/<key>`` (first writer wins), else it is removed."""
        if kind not in KINDS:
            raise BenchError(f"cache: {kind!r} is not a declared task kind (bench/plan/kinds.py: {', '.join(KINDS)})")
        final = self.path(kind, key)
        tmp = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}-{kind}-{key}@{HOST}"  # see writer_alive
        tmp.mkdir(parents=True)
        try:
            yield tmp
            files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            entry = {"kind": kind, "key": key, "files": files, "created": time.time(), "host": HOST, "pid": os.getpid()}
            (tmp / ENTRY).write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
            stamp = stamps.settled(tmp, time.time_ns())  # our private folder, hashed just now: stamped as it is renamed
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists() and not self.has(kind, key):
                self.discard(kind, key)  # an incomplete leftover (has() already removed a damaged one)
            try:
                os.replace(tmp, final)
                stamps.write(self.root, kind, key, stamp)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not self.has(kind, key):
                    raise
                shutil.rmtree(tmp)  # another process finished first: keep theirs, both are correct
            shutil.rmtree(self.partial(kind, key, create=False), ignore_errors=True)
            self._verified.add((kind, key))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def writer_alive(name: str) -> bool:
        """Whether the process writing ``tmp/<name>`` (``<pid>-<rand>-<kind>-<key>@<host>``) is alive here."""
        head, _, host = name.rpartition("@")
        pid = head.split("-", 1)[0]
        return host == HOST and pid.isdigit() and pid_alive(int(pid))

    def discard(self, kind: str, key: str) -> None:
        """Move an entry out of the way (atomically) and delete it."""
        self._verified.discard((kind, key))
        stamps.forget(self.root, kind, key)
        trash = self.root / "tmp" / f"trash-{uuid.uuid4().hex[:8]}-{kind}-{key}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path(kind, key), trash)
        shutil.rmtree(trash, ignore_errors=True)

    def entries(self) -> Iterator[tuple[str, str]]:
        """(kind, key) of every entry folder, complete or not, kind by kind in declaration order."""
        for kind in list(KINDS):
            folder = self.root / kind
            if folder.is_dir():
                yield from ((kind, p.name) for p in sorted(folder.iterdir()) if p.is_dir())

    # -------------------------------------------------------------------------- partial state
    def partial(self, kind: str, key: str, create: bool = True) -> Path:
        """The resumable state folder of an entry being computed (removed when the entry is complete)."""
        path = self.root / "partial" / f"{kind}-{key}"
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    # ----------------------------------------------------------------------------------- claims
    def _claim_path(self, kind: str, key: str) -> Path:
        return self.root / "claims" / f"{kind}-{key}"

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        path = self.root / "claims" / ".mutex"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def claim_info(self, kind: str, key: str) -> ClaimInfo | None:
        path = self._claim_path(kind, key)
        try:
            data = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
            return ClaimInfo(str(data["host"]), int(data["pid"]), float(data["started"]), str(data["token"]), age)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):  # half-written or damaged: treat as expired
            return ClaimInfo("?", -1, 0.0, "", float("inf"))

    def try_claim(self, kind: str, key: str) -> bool:
        """Claim an entry for this process; False while another live process holds it."""
        path = self._claim_path(kind, key)
        with self._mutex():
            info = self.claim_info(kind, key)
            if info is not None and info.alive:
                return False
            token = uuid.uuid4().hex
            data = json.dumps({"host": HOST, "pid": os.getpid(), "started": time.time(), "token": token})
            path.unlink(missing_ok=True)  # an expired claim: its holder is gone
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(data)
        with self._lock:
            self._held[path] = token
            if self._heartbeat is None or not self._heartbeat.is_alive():
                self._heartbeat = threading.Thread(target=self._beat, name="bench-claims", daemon=True)
                self._heartbeat.start()
        return True

    def release(self, kind: str, key: str) -> None:
        path = self._claim_path(kind, key)
        with self._lock:
            token = self._held.pop(path, None)
        if token is None:
            return
        with self._mutex():
            info = self.claim_info(kind, key)
            if info is not None and info.token == token:
                path.unlink(missing_ok=True)

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self._lock:
                held = list(self._held)
            for path in held:
                with contextlib.suppress(OSError):
                    os.utime(path)
