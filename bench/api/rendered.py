"""A re-run of a finished suite skips re-reading its evaluations when its results are current.

Writing the results reads every evaluation's flags and metrics (``collect``): its cost grows with
the evaluations, however little changed. After each run the driver records a fingerprint of what
its results were rendered from, in the cache (``stamps/results-<digest of the results folder>``):
the plan's keys with the ``ENTRY`` digest of each finished entry, the bytes of ``results.json``
and ``index.html`` as written, and the source of bench and the shipped defences. A later run where
nothing ran and whose fingerprint is the same leaves the results as they are without reading an
evaluation. Anything else (an entry recomputed, a results file edited or removed, bench changed)
collects and compares as before; ``bench report`` always renders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from functools import cache
from pathlib import Path

from bench.core.files import atomic_write_text
from bench.engine.store import ENTRY, Store
from bench.plan.tasks import Plan

PACKAGES = ("bench", "defenses")


@cache
def source_digest() -> str:
    """sha256 over bench's and the shipped defences' Python sources (what renders the results)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def fingerprint(plan: Plan, store: Store, out: Path) -> str | None:
    """What ``out``'s results are rendered from now; None when a results file is missing."""
    h = hashlib.sha256(source_digest().encode())
    for name in ("results.json", "index.html"):
        try:
            h.update(hashlib.sha256((out / name).read_bytes()).digest())
        except OSError:
            return None
    for task in plan.tasks:
        h.update(f"{task.kind}/{task.key}".encode())
        if store.has(task.kind, task.key):  # (answered from the scheduler's checks: cached in the store)
            with contextlib.suppress(OSError):
                h.update(hashlib.sha256((store.path(task.kind, task.key) / ENTRY).read_bytes()).digest())
    return h.hexdigest()


def _path(store: Store, out: Path) -> Path:
    return store.root / "stamps" / f"results-{hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:24]}"


def current(plan: Plan, store: Store, out: Path) -> bool:
    """Whether ``out`` holds the results of exactly these entries, rendered by this bench."""
    try:
        recorded = json.loads(_path(store, out).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded == fingerprint(plan, store, out)


def record(plan: Plan, store: Store, out: Path) -> None:
    value = fingerprint(plan, store, out)
    path = _path(store, out)
    if value is None:
        path.unlink(missing_ok=True)
        return
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps({"results": str(out.resolve()), "fingerprint": value}) + "\n")
