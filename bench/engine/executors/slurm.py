"""Slurm through submitit: one Slurm job per task, the tasks ready together submitted as one array.

Options: partition, time limit (minutes), GPUs and CPUs per task, array parallelism. The scheduler
submits a task once the entries it needs exist, so dependencies are respected. A job that reaches
its time limit or is pre-empted is checkpointed by submitit (``Checkpointable``) and requeued with
the same arguments; so is a job requeued by Slurm (``scontrol requeue``). Either way it runs
``run_remote`` again, which resumes training from the store's ``partial/`` area (the last finished
epoch) and evaluation from its last saved batch.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.engine.executors.base import Executor, WorkerResult, WorkerSpec, missing_extra, run_remote
from bench.plan.tasks import SuiteRef, Task

try:
    import submitit
    import submitit.core.utils
except ImportError:  # reported when the executor is created
    submitit = None

POLL_S = 2.0
PROBE_S = 30.0


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 60 * 24  # time limit per task
    gpus: int = 0  # GPUs per task
    cpus: int = 1  # CPUs per task
    array_parallelism: int = 256  # at most this many tasks of one array at once
    folder: str | None = None  # submitit's job files and logs (default: <cache>/slurm)
    retries: int = 2  # a job that ends without a result (killed, node failure) is resubmitted this often

    def __post_init__(self) -> None:
        least = {"time_min": 1, "gpus": 0, "cpus": 1, "array_parallelism": 1, "retries": 0}
        for name, low in least.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BenchError(f"slurm {name}: expected an integer >= {low}, got {value!r}")
        if self.partition is not None and not isinstance(self.partition, str):
            raise BenchError(f"slurm partition: expected a name, got {self.partition!r}")


class SlurmTask(submitit.helpers.Checkpointable if submitit else object):  # type: ignore[misc]
    """What a Slurm job runs; on timeout or pre-emption submitit requeues it with the same arguments."""

    def __call__(self, ref: SuiteRef, key: str, worker: WorkerSpec) -> WorkerResult:
        return run_remote(ref, key, worker)


TERMINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"}
GRACE_POLLS = 3  # a job gone from the queue may still be writing its result file on a slow file system


def _queue_states() -> dict[str, str] | None:
    """Job id -> state of every job ``squeue`` still shows (array tasks one per line); None if it failed."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return dict(line.split(maxsplit=1) for line in out.stdout.splitlines() if " " in line)


@dataclass
class _Job:
    task: Task
    job: Any  # submitit.Job
    future: Future
    retries: int
    gone: int = 0  # polls since the job left the queue (or ended) without a result

    def outcome(self, states: dict[str, str] | None) -> WorkerResult | str | None:
        """The worker's result; a one-line reason when the job ended without one; None while it runs."""
        if self.job.paths.result_pickle.exists():
            status, value = submitit.core.utils.pickle_load(self.job.paths.result_pickle)
            if status == "success":
                if value.error:  # the job's log holds the worker's output around the traceback
                    return dataclasses.replace(value, where=f"{value.where}; log {self.job.paths.stderr}")
                return value
            last = str(value).strip().splitlines()[-1] if str(value).strip() else "no message"  # not retried
            return WorkerResult(f"slurm job {self.job.job_id}; log {self.job.paths.stderr}", error=f"submitit: {last}", trace=str(value))
        state = None if states is None else states.get(str(self.job.job_id), "gone")
        if state is None or (state not in TERMINAL and state != "gone"):
            self.gone = 0
            return None
        self.gone += 1
        return f"ended without a result ({state.lower()})" if self.gone > GRACE_POLLS else None


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, worker: WorkerSpec, options: SlurmOptions, log: Callable[[str], None] | None = None) -> None:
        if submitit is None:
            raise missing_extra("slurm", "submitit")
        if shutil.which("sbatch") is None:
            raise BenchError("--executor slurm: no `sbatch` on PATH; run on a Slurm login node (or start one here: scripts/slurm-up)")
        try:
            probe = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=PROBE_S)
            problem = None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["no answer"])[-1]
        except subprocess.TimeoutExpired:
            problem = f"no answer within {PROBE_S:.0f}s"
        if problem:
            raise BenchError(f"--executor slurm: cannot reach the Slurm controller (sinfo: {problem}); check `sinfo` and slurmctld")
        self.worker, self.options = worker, options
        self.folder = Path(options.folder or Path(worker.cache_dir) / "slurm").expanduser()
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster="slurm")
        params = dict(
            name="bench", timeout_min=options.time_min, cpus_per_task=options.cpus, gpus_per_node=options.gpus or None,
            nodes=1, tasks_per_node=1, slurm_array_parallelism=options.array_parallelism,
        )  # fmt: skip
        if options.partition:
            params["slurm_partition"] = options.partition
        self.executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        self.jobs: list[_Job] = []
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.poller = threading.Thread(target=self._poll, name="bench-slurm", daemon=True)
        self.poller.start()

    def submit(self, task: Task) -> Future:
        return self.submit_all([task])[0]

    def submit_all(self, tasks: Sequence[Task]) -> list[Future]:
        futures = [Future() for _ in tasks]
        self._submit(tasks, futures, self.options.retries)
        return futures

    def _submit(self, tasks: Sequence[Task], futures: Sequence[Future], retries: int) -> None:
        if not tasks:
            return
        with self.executor.batch():  # one job array
            jobs = [self.executor.submit(SlurmTask(), t.suite, t.key, self.worker) for t in tasks]
        with self.lock:
            self.jobs.extend(_Job(t, j, f, retries) for t, j, f in zip(tasks, jobs, futures))

    def _poll(self) -> None:
        """Job outcomes from submitit's result files and ``squeue`` (no accounting database needed)."""
        while not self.stop.wait(POLL_S):
            with self.lock:
                jobs = list(self.jobs)
            states = _queue_states() if jobs else {}
            for item in jobs:
                outcome = item.outcome(states)
                if outcome is None:
                    continue
                with self.lock:
                    self.jobs.remove(item)
                if isinstance(outcome, WorkerResult):
                    item.future.set_result(outcome)
                elif item.retries > 0:  # killed, node failure, out of memory: run it again (it resumes)
                    self.log(f"  slurm job {item.job.job_id} of {item.task.label}: {outcome}; resubmitted (it resumes)")
                    self._submit([item.task], [item.future], item.retries - 1)
                else:
                    item.future.set_exception(BenchError(f"slurm job {item.job.job_id}: {outcome} (log {item.job.paths.stderr})"))

    def describe(self) -> str:
        o = self.options
        return f"slurm (partition {o.partition or 'default'}, {o.gpus} GPUs and {o.cpus} CPUs per task, {o.time_min} min; jobs in {self.folder})"

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            left = [item.job for item in self.jobs]
        for job in left:  # interrupted run: do not leave jobs queued behind us
            job.cancel(check=False)
