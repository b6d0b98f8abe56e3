"""Ray without a shared file system (``--ray-transfer``): entries travel through Ray's object store.

On clusters whose nodes do not share the cache (cloud machines, KubeRay pods: each its own disk,
only Ray's object store in common), a task's worker gets what it needs and gives back what it wrote
as Ray objects:

* **Driver** (:class:`TransferDriver`, one thread per task in flight): claims the task in the driver's
  store (claims stay with the driver, renewed by its heartbeat); puts each entry the task needs into
  the object store, once per entry for the whole run (:meth:`TransferDriver.ref`); runs the Ray task;
  commits the entry that comes back into the driver's store through ``Store.writer`` after checking
  every file against the sha256 the worker's ``ENTRY`` records (a file missing, added or changed is
  refused: nothing is committed); releases the claim.
* **Worker** (:func:`run_transferred`, on any node): a node-local scratch cache at the same path as
  the driver's cache (each node its own disk); an input already there (intact: the store's stamps)
  is not fetched again, so large weights cross the network once per node, not once per task. The
  input refs are passed nested in a list, so Ray fetches only those :func:`run_transferred` asks for.
  The task runs on the scratch cache (training resumes from its ``partial/`` state when the same node
  runs it again); the complete entry (its files and ``ENTRY``) is returned.
* A worker node that dies mid-task: Ray resubmits the task (``max_retries``) to a live node, which
  restarts it (or resumes it, on the same node); nothing reaches the driver's store but complete,
  verified entries.

The suite file (and what it includes), the plug-ins and the datasets must be at the same paths on
every node, as bench itself must be installed there.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import traceback
from typing import Any

from bench.core.errors import BenchError, DatasetMissingError
from bench.engine.executors.base import WorkerResult, WorkerSpec, worker_location
from bench.engine.store import ENTRY, CorruptEntryError, Store
from bench.plan.tasks import SuiteRef, Task

Files = dict[str, bytes]  # an entry's files by relative name, ENTRY included


def pack(store: Store, kind: str, key: str) -> Files:
    """An entry's files, each checked against its recorded sha256 as it is read."""
    files = {name: store.read_bytes(kind, key, name) for name in store.files(kind, key)}
    files[ENTRY] = (store.path(kind, key) / ENTRY).read_bytes()
    return files


def commit(store: Store, kind: str, key: str, files: Files) -> bool:
    """Write a transferred entry into ``store``, verified against its ``ENTRY`` first; False if it was there."""
    try:
        recorded = json.loads(files[ENTRY])["files"]
    except (KeyError, ValueError, TypeError):
        raise CorruptEntryError(f"{kind}/{key[:12]}: transferred without a readable {ENTRY}") from None
    names = set(files) - {ENTRY}
    if names != set(recorded):
        raise CorruptEntryError(f"{kind}/{key[:12]}: transferred files {sorted(names ^ set(recorded))} differ from its {ENTRY}")
    for name in sorted(names):
        if hashlib.sha256(files[name]).hexdigest() != recorded[name]:
            raise CorruptEntryError(f"{kind}/{key[:12]}: {name}: sha256 mismatch after the transfer")
    if store.has(kind, key):
        return False
    with store.writer(kind, key) as tmp:
        for name in sorted(names):
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[name])
    return True


def run_transferred(ref: SuiteRef, key: str, worker: WorkerSpec, inputs: list[tuple[str, str, Any]]) -> tuple[WorkerResult, Files | None, list[str]]:
    """On a worker node: fetch the inputs the scratch cache lacks, run the task there, return its entry.

    Returns the result, the entry's files (None on failure) and the ``kind/key`` of the inputs fetched
    (prefixed with this node's Ray id: ``node kind/key``)."""
    import ray

    where, start = worker_location(), time.perf_counter()
    try:
        from bench.device.env import resolve_device
        from bench.engine.worker import WorkerContext, plan_for, run

        scratch = Store(worker.cache_dir)
        fetched = []
        for kind, k, obj in inputs:
            if not scratch.has(kind, k):
                commit(scratch, kind, k, ray.get(obj))
                fetched.append(f"{ray.get_runtime_context().get_node_id()} {kind}/{k}")
        plan = plan_for(ref)
        task = plan.task(key)
        if task is None:
            raise BenchError(f"{ref.path}: no task {key[:12]} in the suite's plan")
        ran = not scratch.has(task.kind, task.key)
        if ran:
            run(task, WorkerContext(plan, scratch, resolve_device(worker.device), worker.data_dir))
        files = pack(scratch, task.kind, task.key)
        return WorkerResult(where, ran=ran, seconds=time.perf_counter() - start), files, fetched
    except Exception as e:  # noqa: BLE001 - reported to the scheduler with the traceback
        message = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
        fatal = isinstance(e, DatasetMissingError)
        return WorkerResult(where, error=message, trace=traceback.format_exc(), fatal=fatal, seconds=time.perf_counter() - start), None, []


class TransferDriver:
    """The driver's side: claims, input refs (one per entry), the Ray task, the verified commit."""

    def __init__(self, ray: Any, remote_fn: Any, worker: WorkerSpec) -> None:
        self.ray, self.remote_fn, self.worker = ray, remote_fn, worker
        self.store = Store(worker.cache_dir)
        self.refs: dict[tuple[str, str], Any] = {}
        self.fetched: list[str] = []  # "node-id kind/key" of every input a worker fetched
        self.needed = 0  # inputs the tasks named (what would travel without the node-local copies)
        self.lock = threading.Lock()

    def ref(self, kind: str, key: str) -> Any:
        """The object of an entry, put into the object store once for the run."""
        with self.lock:
            if (kind, key) not in self.refs:
                self.refs[(kind, key)] = self.ray.put(pack(self.store, kind, key))
            return self.refs[(kind, key)]

    def drive(self, task: Task) -> WorkerResult:
        store = self.store
        while not store.try_claim(task.kind, task.key):  # another process runs it: reuse its entry
            if store.has(task.kind, task.key):
                return WorkerResult(f"{worker_location()} (driver)", ran=False)
            time.sleep(1.0)
        try:
            if store.has(task.kind, task.key):
                return WorkerResult(f"{worker_location()} (driver)", ran=False)
            inputs = [(kind, k, self.ref(kind, k)) for kind, k in task.needs]
            result, files, fetched = self.ray.get(self.remote_fn.remote(task.suite, task.key, self.worker, inputs))
            with self.lock:
                self.needed += len(inputs)
                self.fetched.extend(fetched)
            if files is not None:
                commit(store, task.kind, task.key, files)
            return result
        finally:
            store.release(task.kind, task.key)


    def summary(self) -> str:
        """One line: inputs named by the tasks, fetched onto nodes, and on how many nodes."""
        nodes = {f.split(" ", 1)[0] for f in self.fetched}
        return (f"ray transfer: {self.needed} inputs needed by tasks, {len(self.fetched)} fetched onto {len(nodes)} nodes "
                f"({len(set(self.fetched))} distinct entry/node pairs), {len(self.refs)} entries put into the object store")  # fmt: skip


def scratch_note() -> str:
    return f"inputs and entries through Ray's object store (node-local scratch caches; pid {os.getpid()} holds the claims)"
