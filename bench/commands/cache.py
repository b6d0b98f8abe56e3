"""``bench cache ls | verify | gc | show KEY``: look into the store without running anything.

Entries are listed kind by kind as ``bench/plan/kinds.py`` declares them; their files are read through
``bench/engine/entries.py`` (``show`` prints the JSON files its kind declares)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from bench.core.errors import BenchError
from bench.engine import entries
from bench.engine.store import ENTRY, Store
from bench.plan.kinds import KINDS, PREFIX, SHARD, TRAIN


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _describe(store: Store, kind: str, key: str) -> str:
    """What an entry is, from its spec (best effort: a damaged entry says so)."""
    try:
        if KINDS[kind].measured_as == TRAIN.name:  # a training run or a shared start
            spec = entries.read_spec(store, KINDS[kind], key)
            run = spec.get("of", spec)  # a prefix: the training it is the start of
            epochs = f" epochs 1-{spec['epochs']}" if kind == PREFIX.name else ""
            return f"{run['defence']['name']} seed={run['seed']}{epochs} on {run['dataset']['name']}/{run['model']['name']}"
        if entries.holds_flags(KINDS[kind]):  # an evaluation or a shard of one
            spec = entries.read_spec(store, KINDS[kind], key)
            w = spec["weights"]
            shard = f" shard {spec['shard'] + 1}/{spec['attack']['shards']}" if kind == SHARD.name else ""
            return f"{spec['attack']['name']}{shard} on {spec['train_key'][:12]} ({(w['averaging'] or {}).get('kind', 'raw')}:{w['checkpoint']})"
        return ""
    except (BenchError, KeyError, TypeError):
        return "(unreadable spec)"


def ls(store: Store) -> str:
    lines = [f"cache {store.root}"]
    total = 0
    for kind, key in store.entries():
        path = store.path(kind, key)
        size = _size(path)
        total += size
        state = "ok" if (path / ENTRY).is_file() else "incomplete"
        lines.append(f"{kind:<9} {key[:16]}  {_human(size):>9}  {state:<10} {_describe(store, kind, key)}")
    claims = sorted((store.root / "claims").glob("*-*")) if (store.root / "claims").is_dir() else []
    partial = sorted((store.root / "partial").iterdir()) if (store.root / "partial").is_dir() else []
    lines.append(f"{len(lines) - 1} entries, {_human(total)}; {len(claims)} claims, {len(partial)} resumable states")
    return "\n".join(lines)


def verify(store: Store, say: Callable[[str], None]) -> int:
    """Check every entry fully (every byte hashed and parsed, stamps ignored; intact ones are stamped anew);
    returns how many are damaged (left in place)."""
    damaged = checked = 0
    for kind, key in store.entries():
        checked += 1
        problem = store.verify(kind, key) if (store.path(kind, key) / ENTRY).is_file() else f"no {ENTRY} (incomplete)"
        if problem:
            damaged += 1
            say(f"DAMAGED {kind}/{key[:16]}: {problem}")
    say(f"{checked} entries checked, {damaged} damaged" + (" (`bench cache gc` removes them)" if damaged else ""))
    return damaged


def gc(store: Store) -> str:
    """Remove damaged or incomplete entries, abandoned writes, expired claims and unclaimed resume state."""
    removed: dict[str, int] = {"damaged entries": 0, "unfinished writes": 0, "expired claims": 0, "resume states": 0}
    for kind, key in list(store.entries()):
        if not (store.path(kind, key) / ENTRY).is_file() or store.problem(kind, key):
            store.discard(kind, key)
            removed["damaged entries"] += 1
    for path in sorted((store.root / "tmp").glob("*")) if (store.root / "tmp").is_dir() else []:
        if not store.writer_alive(path.name):
            shutil.rmtree(path, ignore_errors=True)
            removed["unfinished writes"] += 1
    claims = store.root / "claims"
    for path in sorted(claims.glob("*-*")) if claims.is_dir() else []:
        kind, key = path.name.split("-", 1)
        info = store.claim_info(kind, key)
        if info is None or not info.alive:
            path.unlink(missing_ok=True)
            removed["expired claims"] += 1
    for path in sorted((store.root / "partial").iterdir()) if (store.root / "partial").is_dir() else []:
        kind, key = path.name.split("-", 1)
        info = store.claim_info(kind, key)
        if info is None or not info.alive:
            shutil.rmtree(path, ignore_errors=True)
            removed["resume states"] += 1
    for path in sorted((store.root / "stamps").glob("*-*")) if (store.root / "stamps").is_dir() else []:
        kind, key = path.name.split("-", 1)
        if kind in KINDS and not store.path(kind, key).is_dir():  # the stamp of an entry that is gone
            path.unlink(missing_ok=True)
    return "removed: " + ", ".join(f"{n} {what}" for what, n in removed.items())


def show(store: Store, prefix: str) -> str:
    matches = [(k, key) for k, key in store.entries() if key.startswith(prefix)]
    if not matches:
        raise BenchError(f"bench cache show: no entry starts with {prefix!r} in {store.root}")
    if len(matches) > 1:
        raise BenchError(f"bench cache show: {prefix!r} matches {len(matches)} entries; give more of the key")
    kind, key = matches[0]
    path = store.path(kind, key)
    lines = [f"{kind}/{key}", f"path: {path}"]
    problem = store.problem(kind, key) if (path / ENTRY).is_file() else f"no {ENTRY} (incomplete)"
    lines.append(f"integrity: {problem or 'ok'}")
    try:
        entry = json.loads((path / ENTRY).read_text())
        lines.append(f"written: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(entry['created']))} on {entry['host']} pid {entry['pid']}")
        lines.extend(f"  {digest[:16]}  {name}" for name, digest in sorted(entry["files"].items()))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    lines.extend(f"{name}:\n{text.rstrip()}" for name, text in entries.shown_files(store, KINDS[kind], key))
    return "\n".join(lines)

