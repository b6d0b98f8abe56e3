"""Ray: one Ray task per bench task, asking for one GPU when the cluster has GPUs.

``address`` joins a running cluster (``ray start --head`` there; every node needs bench installed
and the cache on a shared file system, or ``transfer``: see ``executors/transfer.py``); without it a local cluster limited to this machine's CPUs
(or ``num_cpus``) is started and stopped with the run. The scheduler submits a task once the
entries it needs exist, so dependencies are respected without Ray object references.
"""

from __future__ import annotations

import os
import socket
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.core.errors import BenchError
from bench.engine.executors import EXECUTORS, ExecutorSpec, Flag
from bench.engine.executors.base import Executor, WorkerSpec, missing_extra, run_remote
from bench.engine.executors.transfer import TransferDriver, run_transferred, scratch_note
from bench.plan.tasks import Task

TRANSFER_RETRIES = 3  # --ray-transfer: a task whose node died runs again on a live one


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A one-line error at once for ``HOST:PORT`` (or ``ray://HOST:PORT``) that does not answer
    (``ray.init`` would retry for minutes); other forms (``auto``) are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise BenchError(f"--ray-address {address}: cannot join the Ray cluster ({e.strerror or e}); check `ray status` there") from None


def _transfer(ray: Any, worker: WorkerSpec, gpu: bool) -> tuple[TransferDriver, ThreadPoolExecutor]:
    """``--ray-transfer``: the driver's side of executors/transfer.py, and threads that wait for the tasks.
    A task whose node dies is resubmitted by Ray (``max_retries``); only complete entries come back."""
    fn = ray.remote(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=TRANSFER_RETRIES)(run_transferred)
    return TransferDriver(ray, fn, worker), ThreadPoolExecutor(256, thread_name_prefix="bench-ray-transfer")


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, worker: WorkerSpec, address: str | None = None, num_cpus: int | None = None, transfer: bool = False) -> None:
        try:
            import ray
        except ImportError:
            raise missing_extra("ray", "ray") from None
        self.ray, self.worker = ray, worker
        self.started = not ray.is_initialized()
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU tasks keep the GPU env alone
        if address and self.started:
            _check_reachable(address)
        try:
            if self.started:
                local = {} if address else {"num_cpus": num_cpus or os.cpu_count() or 1}
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, **local)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BenchError(f"--ray-address {address}: cannot join the Ray cluster ({first}); check `ray status` there") from None
        gpus = ray.cluster_resources().get("GPU", 0)
        self.gpu = gpus >= 1
        if worker.device == "cpu":
            self.gpu = False
        if not address:  # a cluster of this machine's: as many tasks at once as it has GPUs (or CPUs)
            self.slots = int(gpus if self.gpu else ray.cluster_resources().get("CPU", 1)) or 1
        self.remote_fn = ray.remote(num_gpus=1 if self.gpu else 0, num_cpus=1, max_retries=0)(run_remote)
        self.summary = f"ray ({'cluster ' + address if address else 'local cluster'}: {int(ray.cluster_resources().get('CPU', 0))} CPUs, {int(gpus)} GPUs)"
        self.transfer = _transfer(ray, worker, self.gpu) if transfer else None
        if self.transfer:
            self.summary += f"; {scratch_note()}"

    def submit(self, task: Task) -> Future:
        if self.transfer:
            return self.transfer[1].submit(self.transfer[0].drive, task)
        return self.remote_fn.remote(task.suite, task.key, self.worker).future()

    def describe(self) -> str:
        return self.summary

    def close(self) -> None:
        if self.transfer:
            self.transfer[1].shutdown(wait=False, cancel_futures=True)
            print(self.transfer[0].summary(), file=sys.stderr)
        if self.started:
            self.ray.shutdown()


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # a running cluster (default: start a local one)
    cpus: int | None = None  # CPUs of the local cluster (default: all)
    transfer: bool = False  # the nodes do not share the cache: entries travel through the object store (executors/transfer.py)

    def __post_init__(self) -> None:
        if not isinstance(self.transfer, bool):
            raise BenchError(f"--ray-transfer: true or false, got {self.transfer!r}")


def make(options: RayOptions, worker: WorkerSpec, ctx: Any) -> Executor:
    from bench.engine.executors.ray import RayExecutor  # this module as it is now (tests re-import it)

    return RayExecutor(worker, options.address, options.cpus, transfer=options.transfer)


EXECUTORS.register(ExecutorSpec(
    "ray", RayOptions, make, doc="one Ray task per bench task, on a local cluster or a running one", prefix="ray_",
    flags=(
        Flag("--ray-address", "address", {"metavar": "ADDR", "help": "ray: join this cluster (default: start a local one)"}),
        Flag("--ray-transfer", "transfer", {
            "action": "store_true",
            "help": "ray: the nodes do not share the cache; entries travel through Ray's object store (node-local scratch caches)",
        }, elsewhere="only for --executor ray, not --executor {executor}"),
    ),
    here=lambda o: not o.address,
))  # fmt: skip
