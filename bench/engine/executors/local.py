"""This machine: tasks one after another in this process, or in N worker processes.

``--workers N`` starts N spawned processes. With GPUs visible (``--device auto|cuda``), worker i is
pinned to one of them with ``CUDA_VISIBLE_DEVICES`` (N may not exceed the GPUs); on CPU each worker
gets ``cpus // N`` threads. ``--workers auto`` (:func:`auto_workers`): one worker per visible GPU;
on a CPU as many as the cores and the tasks that can run at once make worthwhile.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

import torch

from bench.core.errors import BenchError
from bench.engine.executors.base import Executor, WorkerSpec, run_remote
from bench.engine.worker import WorkerContext, run
from bench.plan.tasks import Task


class Sequential(Executor):
    """Each task in this process, at submission (the scheduler holds the claim)."""

    name = "local"
    remote = False
    slots = 1

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def submit(self, task: Task) -> Future:
        future: Future = Future()
        try:
            run(task, self.ctx)
            future.set_result(None)
        except Exception as e:  # noqa: BLE001 - the scheduler reports it (with its traceback)
            future.set_exception(e)
        return future


def visible_gpus(device: str) -> list[str]:
    """The GPU ids workers are pinned to: none for CPU devices or machines without CUDA."""
    if device == "cpu" or not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g for g in env.split(",") if g] if env else [str(i) for i in range(torch.cuda.device_count())]


def plan_width(tasks: list[Task], done: Callable[[str, str], bool]) -> int:
    """The most tasks of ``tasks`` not done yet that can run at once: tasks grouped by the length of the
    longest chain of unfinished tasks they wait for, the largest group's size (1 for a plan with none)."""
    todo = {t.key: t for t in tasks if not done(t.kind, t.key)}
    depth: dict[str, int] = {}

    def level(key: str) -> int:
        if key not in depth:
            waits = [k for _, k in todo[key].needs if k in todo]
            depth[key] = 1 + max((level(k) for k in waits), default=0)
        return depth[key]

    counts: dict[int, int] = {}
    for key in todo:
        counts[level(key)] = counts.get(level(key), 0) + 1
    return max(counts.values(), default=1)


def auto_workers(device: str, tasks: list[Task], done: Callable[[str, str], bool], cpus: int | None = None) -> int:
    """``--workers auto``: one per visible GPU; on a CPU, one per core, but no more than the plan's
    width (:func:`plan_width`: more processes than tasks that can run at once only split the cores)."""
    gpus = visible_gpus(device)
    if gpus:
        return len(gpus)
    return max(1, min(cpus or os.cpu_count() or 1, plan_width(tasks, done)))


def _pin(slots: multiprocessing.Queue, threads: int) -> None:
    """Worker initializer: take one slot (a GPU id, or "" for CPU) and the worker's thread count."""
    gpu = slots.get()
    if gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


class Workers(Executor):
    """N worker processes on this machine: one per visible GPU, or CPU processes sharing the cores."""

    name = "local"

    def __init__(self, n: int, worker: WorkerSpec) -> None:
        gpus = visible_gpus(worker.device)
        if worker.device.startswith("cuda:"):
            raise BenchError("--workers: pins one GPU per worker; use --device cuda (or auto), not a single device")
        if gpus and n > len(gpus):
            raise BenchError(f"--workers {n}: only {len(gpus)} GPUs are visible ({','.join(gpus)}); use at most {len(gpus)}")
        self.worker = worker if not gpus else WorkerSpec(worker.cache_dir, "cuda", worker.data_dir)
        context = multiprocessing.get_context("spawn")
        slots = context.Queue()
        for i in range(n):
            slots.put(gpus[i] if gpus else "")
        threads = 1 if gpus else max(1, (os.cpu_count() or 1) // n)
        self.slots = n
        self.pool = ProcessPoolExecutor(n, mp_context=context, initializer=_pin, initargs=(slots, threads))
        self.where = f"{n} worker processes ({'GPUs ' + ','.join(gpus[:n]) if gpus else f'CPU, {threads} threads each'})"

    def submit(self, task: Task) -> Future:
        return self.pool.submit(run_remote, task.suite, task.key, self.worker)

    def describe(self) -> str:
        return f"local: {self.where}"

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
