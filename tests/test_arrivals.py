"""A run that cannot progress says so: a task a worker reports finished whose entry never appears in
the driver's store stops the run within seconds, in one line naming the node and the likely cause,
whatever the executor. No cluster needed: an executor stub stands for workers on another node."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from bench.core.progress import Progress
from bench.engine import arrivals
from bench.engine.executors.base import Executor, WorkerResult
from bench.engine.scheduler import run_tasks
from bench.engine.store import Store
from bench.plan.expand import expand
from bench.suite.load import load_suite
from tests.conftest import MINIMAL_SUITE, write_suite


class Elsewhere(Executor):
    """Workers on a node with its own disk: they report success, and write into *their* cache."""

    remote = True

    def __init__(self, name: str, theirs: Store, delay_s: float | None = None) -> None:
        self.name, self.theirs, self.delay_s = name, theirs, delay_s
        self.submitted: list[str] = []

    def submit(self, task) -> Future:
        self.submitted.append(task.key)
        with self.theirs.writer(task.kind, task.key) as tmp:  # the worker's own (unshared) cache
            (tmp / "metrics.json").write_text("{}")
        future: Future = Future()
        future.set_result(WorkerResult("node-7 pid 4242", ran=True, seconds=0.1))
        return future


class Late(Elsewhere):
    """The entry reaches the driver's cache a little after the worker reports (a shared file system's delay)."""

    def __init__(self, name: str, store: Store, delay_s: float) -> None:
        super().__init__(name, store)
        self.delay_s = delay_s

    def submit(self, task) -> Future:
        self.submitted.append(task.key)
        def write() -> None:
            time.sleep(self.delay_s)
            with self.theirs.writer(task.kind, task.key) as tmp:
                (tmp / "metrics.json").write_text("{}")
        threading.Thread(target=write).start()
        future: Future = Future()
        future.set_result(WorkerResult("node-7 pid 4242", ran=True, seconds=0.1))
        return future


@pytest.fixture
def plan(tmp_path: Path):
    return expand(load_suite(write_suite(tmp_path / "t.yaml", MINIMAL_SUITE)))


@pytest.mark.parametrize("executor, hint", [("ray", "--ray-transfer"), ("slurm", "file system every node mounts"), ("local", "another cache")])
def test_a_finished_task_whose_entry_never_arrives_stops_the_run(plan, tmp_path, monkeypatch, executor, hint) -> None:
    monkeypatch.setattr(arrivals, "GRACE_S", 2.0)
    driver, worker = Store(tmp_path / "driver"), Store(tmp_path / "node-7")
    stub = Elsewhere(executor, worker)
    t0 = time.monotonic()
    with pytest.raises(arrivals.EntryNotVisibleError) as caught:
        run_tasks(plan, driver, stub, Progress(False), tmp_path / "logs")
    assert time.monotonic() - t0 < 2.0 + 3.0  # within seconds, not a silent wait
    message = str(caught.value)
    first = plan.tasks[0]
    assert "\n" not in message and "node node-7" in message and first.key[:12] in message and hint in message
    assert str(tmp_path / "driver" / first.kind / first.key) in message and "do not share" in message
    assert stub.submitted == [first.key]  # the tasks that need it were never handed out
    assert worker.has(first.kind, first.key) and not driver.has(first.kind, first.key)


def test_an_entry_that_arrives_within_the_grace_is_waited_for(plan, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(arrivals, "GRACE_S", 10.0)
    driver = Store(tmp_path / "driver")
    result = run_tasks(plan, driver, Late("ray", Store(tmp_path / "driver"), 1.5), Progress(False), tmp_path / "logs")
    assert [o.status for o in result.outcomes] == ["ran"] * len(plan.tasks)
    assert all(driver.has(t.kind, t.key) for t in plan.tasks)


def test_the_command_line_says_it_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    """``bench run``: the same error, as the one line the CLI prints (exit 1, no traceback)."""
    from bench.commands.cli import main
    from bench.engine.executors import local

    monkeypatch.setattr(arrivals, "GRACE_S", 1.0)
    suite = write_suite(tmp_path / "t.yaml", MINIMAL_SUITE)
    monkeypatch.setattr(local, "Workers", lambda n, worker: Elsewhere("local", Store(tmp_path / "node-7")))
    code = main(["run", str(suite), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--device", "cpu", "--workers", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "node node-7" in line]
    assert len(lines) == 1 and "is not in the driver's cache" in lines[0]
