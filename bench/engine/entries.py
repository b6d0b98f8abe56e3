"""Typed reads and writes of the store's entries, one function per thing an entry holds.

The layouts are declared with the kinds (``bench/plan/kinds.py``); this module is the only one that
opens an entry's files by name. Writers check, before the entry is committed, that it holds exactly
its kind's declared files (a worker that writes an undeclared file fails loudly instead of making a
cache other code cannot read). Every read goes through ``Store`` and is checked against the entry's
recorded sha256 (``bench/engine/store.py``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.core.files import write_json
from bench.engine.store import Store
from bench.plan import kinds as K
from bench.plan.kinds import Kind

# ------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def writing(store: Store, kind: Kind, key: str) -> Iterator[Path]:
    """``store.writer`` for an entry of ``kind``: the folder is committed only if it holds exactly the kind's files."""
    with store.writer(kind.name, key) as tmp:
        yield tmp
        problems = kind.problems(sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()))
        if problems:
            raise BenchError(f"{kind.name}/{key[:12]}: the entry does not match its kind: " + "; ".join(problems))


def write_prefix(store: Store, key: str, state: Path, spec: Any, manifest: Mapping[str, Any]) -> None:
    """A shared start: the training state after its epochs (a file copied as it is), spec, manifest."""
    with writing(store, K.PREFIX, key) as tmp:
        shutil.copyfile(state, tmp / K.STATE)
        write_json(tmp / K.SPEC, spec)
        write_json(tmp / K.MANIFEST, manifest)


def write_train(store: Store, key: str, spec: Any, log: list[dict[str, Any]],
                weights: Mapping[str, Mapping[str, Any]], manifest: Mapping[str, Any]) -> None:  # fmt: skip
    """A training run: spec, its per-epoch log, ``weights[tag][checkpoint]`` state dicts, manifest."""
    with writing(store, K.TRAIN, key) as tmp:
        write_json(tmp / K.SPEC, spec)
        (tmp / K.LOG).write_text("".join(json.dumps(r) + "\n" for r in log))
        for tag, states in weights.items():
            (tmp / K.weights_file(tag, "_")).parent.mkdir(parents=True)  # the tag's folder, even with no checkpoint kept
            for checkpoint, state in states.items():
                torch.save(state, tmp / K.weights_file(tag, checkpoint))
        write_json(tmp / K.MANIFEST, manifest)


def write_flags(store: Store, kind: Kind, key: str, ids: np.ndarray, clean: Any, robust: Any, spec: Any,
                metrics: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:  # fmt: skip
    """An evaluation or a shard: per-sample flags (by test-set id), spec, metrics, manifest."""
    with writing(store, kind, key) as tmp:
        np.savez_compressed(tmp / K.FLAGS, sample_id=ids.astype(np.int32), clean=clean, robust=robust)
        write_json(tmp / K.SPEC, spec)
        write_json(tmp / K.METRICS, metrics)
        write_json(tmp / K.MANIFEST, manifest)


def write_checks(store: Store, key: str, checks: Any) -> None:
    """A sanity entry: the gradient-masking checks."""
    with writing(store, K.SANITY, key) as tmp:
        write_json(tmp / K.CHECKS, checks)


def write_analysis(store: Store, key: str, arrays: Mapping[str, np.ndarray], metrics: Mapping[str, Any]) -> None:
    """An analysis entry: its arrays and its metrics."""
    with writing(store, K.ANALYSIS, key) as tmp:
        np.savez_compressed(tmp / K.ARRAYS, **arrays)
        write_json(tmp / K.METRICS, metrics)


# ------------------------------------------------------------------------------------------- reading


def read_spec(store: Store, kind: Kind, key: str) -> Any:
    return store.read_json(kind.name, key, K.SPEC)


def read_manifest(store: Store, kind: Kind, key: str) -> Any:
    return store.read_json(kind.name, key, K.MANIFEST)


def read_metrics(store: Store, kind: Kind, key: str) -> Any:
    """An evaluation's, a shard's or an analysis's metrics."""
    return store.read_json(kind.name, key, K.METRICS)


def read_flags(store: Store, kind: Kind, key: str) -> dict[str, np.ndarray]:
    """An evaluation's or a shard's per-sample flags: ``sample_id``, ``clean``, ``robust``."""
    return store.read_npz(kind.name, key, K.FLAGS)


def read_checks(store: Store, key: str) -> Any:
    return store.read_json(K.SANITY.name, key, K.CHECKS)


def read_arrays(store: Store, key: str) -> dict[str, np.ndarray]:
    return store.read_npz(K.ANALYSIS.name, key, K.ARRAYS)


def read_log(store: Store, key: str) -> list[dict[str, Any]]:
    """A training run's per-epoch log records."""
    return [json.loads(line) for line in store.read_bytes(K.TRAIN.name, key, K.LOG).decode().splitlines() if line]


def load_weights(store: Store, key: str, tag: str, checkpoint: str, device: torch.device) -> dict[str, torch.Tensor]:
    """A training run's ``tag`` weights at ``checkpoint`` (checked, ``weights_only``)."""
    return store.load_weights(K.TRAIN.name, key, K.weights_file(tag, checkpoint), device)


def load_state(store: Store, key: str, device: torch.device) -> dict[str, Any]:
    """A shared start's training state (checked, ``weights_only``)."""
    return store.load_weights(K.PREFIX.name, key, K.STATE, device)


def holds_flags(kind: Kind) -> bool:
    """Whether entries of ``kind`` hold per-sample flags (evaluations and their shards)."""
    return K.FLAGS in kind.files


def shown_files(store: Store, kind: Kind, key: str) -> list[tuple[str, str]]:
    """The JSON files of an entry as ``bench cache show`` prints them (unchecked: for a damaged entry too)."""
    path = store.path(kind.name, key)
    order = (K.SPEC, K.MANIFEST, K.METRICS, K.CHECKS)
    return [(name, (path / name).read_text()) for name in order if name in kind.files and (path / name).is_file()]
