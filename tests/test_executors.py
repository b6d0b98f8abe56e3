"""Executors decide only where tasks run: the same suite gives the same results through the local
sequential runner, N local worker processes, a real (local) Ray cluster and a real Slurm cluster
(``scripts/slurm-up``); Slurm jobs killed, cancelled or pre-empted mid-training resume; a failing
task fails the run cleanly; two runs on one cache never compute a task twice; sharded evaluation
merges to the unsharded per-sample flags.

Ray and Slurm tests are skipped only where the platform cannot run them; ``BENCH_REQUIRE_CLUSTERS=1``
(CI) turns those skips into failures."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.commands.cli import main
from bench.core.progress import Progress
from bench.engine.executors.base import Executor, WorkerResult
from bench.engine.scheduler import run_tasks
from bench.engine.store import Store
from bench.plan.expand import expand
from bench.suite.load import load_suite
from tests.conftest import ROOT, SUITES, write_suite

METRICS = ["display_name", "attack", "n", "robust_acc", "clean_acc"]
SMOKE = SUITES / "smoke.yaml"
# The README's commands ("Running on many GPUs or a cluster"), with --cache-dir/--results-dir added here.
EXECUTORS = {
    "local --workers 2": ["--workers", "2"],
    "ray": ["--executor", "ray"],
    "slurm": ["--executor", "slurm"],
}
# Four short epochs: long enough to interrupt a Slurm job after its first epoch state is saved.
TINY = """\
name: tiny
dataset: {synthetic: {num_classes: 4, size: 12, n_train: 256, n_test: 64}}
model: {tiny_cnn: {width: 8}}
threat: {norm: Linf, eps: 24/255}
train: {epochs: 4, batch_size: 32, schedule: {milestones: [2]}, val_fraction: 0.125, val_attack: {steps: 2}}
defences: [{pgd_at: {steps: 2}}]
attacks: [fgsm, {pgd: {steps: 3}}]
eval: {n_examples: 64, batch_size: 32}
"""
BROKEN_PLUGIN = '''
from dataclasses import dataclass
from bench.registry import DEFENCES

@dataclass(frozen=True)
class P:
    pass

@DEFENCES.register("broken_on_worker", params=P, version=1)
def broken_on_worker(model, x, y, p, ctx):
    """Raises (tests)."""
    return model.no_such_attribute
'''


def _unavailable(what: str, hint: str) -> None:
    message = f"{what} is not available here ({hint})"
    if os.environ.get("BENCH_REQUIRE_CLUSTERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and any(s.startswith(("idle", "mixed", "allocated")) for s in out.stdout.split())


def need(executor: str) -> None:
    """Skip (or fail, in CI) when the platform cannot run ``executor``."""
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        _unavailable("Ray", "install the extra: pip install 'robustness-bench[ray]'")
    if executor == "slurm":
        if importlib.util.find_spec("submitit") is None:
            _unavailable("submitit", "install the extra: pip install 'robustness-bench[slurm]'")
        if not slurm_up():
            _unavailable("a Slurm cluster", "no sbatch or no idle node; start one with scripts/slurm-up")


def bench(suite: Path, cache: Path, results: Path, *extra: str, wait: bool = True, **env: str):
    """``bench run`` in a fresh process (as a user runs it): the completed process, or the Popen."""
    cmd = [sys.executable, "-m", "bench", "run", str(suite), "--device", "cpu", "--cache-dir", str(cache), "--results-dir", str(results), *extra]
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=900)


def metrics(results: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(results / name / "results.csv")[METRICS]


def run_json(results: Path, name: str) -> dict:
    return json.loads((results / name / "run.json").read_text())


def ran(summary: dict) -> int:
    return sum(summary[k] for k in ("trained", "evaluated", "checked", "analyzed"))


@pytest.fixture(scope="module")
def smoke_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke suite through the default executor (sequential, in this process)."""
    base = tmp_path_factory.mktemp("smoke-local")
    args = ["run", str(SMOKE), "--device", "cpu", "--quiet", "--cache-dir", str(base / "cache"), "--results-dir", str(base / "results")]
    assert main(args) == 0
    return base / "results"


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny-local")
    suite = write_suite(base / "tiny.yaml", TINY)
    assert main(["run", str(suite), "--device", "cpu", "--quiet", "--cache-dir", str(base / "cache"), "--results-dir", str(base / "results")]) == 0
    return {"suite": suite, "results": base / "results", "cache": base / "cache"}


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_the_smoke_suite_gives_the_same_results_through_every_executor(smoke_reference, tmp_path, name) -> None:
    need(name)
    done = bench(SMOKE, tmp_path / "cache", tmp_path / "results", *EXECUTORS[name])
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(metrics(tmp_path / "results", "smoke"), metrics(smoke_reference, "smoke"))
    summary = run_json(tmp_path / "results", "smoke")
    assert ran(summary) == summary["planned"] and summary["failed"] == 0
    # one status line per finished task, with done / running / left counts
    lines = re.findall(r"^\[done (\d+)/(\d+), running (\d+), left (\d+)\] ran ", done.stderr, re.M)
    assert len(lines) == summary["planned"]
    assert [int(d) for d, *_ in lines] == list(range(1, summary["planned"] + 1))
    assert all(int(d) + int(r) + int(left) == int(t) for d, t, r, left in lines)


def _worker_pid(cache: Path, timeout: float = 300) -> int:
    """The pid of the worker training the suite's run, once its first epoch state is saved."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list((cache / "partial").glob("train-*/state.pt")):
            claim = next((cache / "claims").glob("train-*"), None)
            if claim is not None:
                return json.loads(claim.read_text())["pid"]
        time.sleep(0.05)
    raise AssertionError("training never saved an epoch state")


def _slurm_job_of(pid: int) -> str:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"SLURM_JOB_ID="))


def _release_when_requeued(job: str, timeout: float = 120) -> None:
    """Slurm keeps a requeued job ineligible for about two minutes; make it eligible now."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout.split()
        if state[:2] == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, capture_output=True)
            return
        time.sleep(0.2)
    raise AssertionError(f"slurm job {job} was not requeued")


@pytest.mark.parametrize("how", ["kill", "preempt"])
def test_a_slurm_task_interrupted_mid_training_is_requeued_and_resumes(tiny_reference, tmp_path, how) -> None:
    """kill: SIGKILL of the worker (what a cancel ends in after Slurm's KillWait, an out-of-memory
    kill, a lost node); preempt: USR2, which Slurm sends before a time limit or a pre-emption
    (submitit checkpoints the job and requeues it)."""
    need("slurm")
    cache = tmp_path / "cache"
    proc = bench(tiny_reference["suite"], cache, tmp_path / "results", "--executor", "slurm", wait=False)
    pid = _worker_pid(cache)
    if how == "kill":
        os.kill(pid, signal.SIGKILL)
    else:
        job = _slurm_job_of(pid)
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        _release_when_requeued(job)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    if how == "kill":
        assert re.search(r"slurm job \S+ of train pgd_at seed=0: ended without a result \(\w+\); resubmitted \(it resumes\)", err)
    store = Store(cache)
    key = next(k for kind, k in store.entries() if kind == "train")
    assert store.read_json("train", key, "manifest.json")["resumed_from_epoch"] >= 1
    pd.testing.assert_frame_equal(metrics(tmp_path / "results", "tiny"), metrics(tiny_reference["results"], "tiny"))


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_a_task_raising_on_a_worker_fails_the_run_cleanly(tmp_path, name) -> None:
    need(name)
    plugin = write_suite(tmp_path / "broken_plugin.py", BROKEN_PLUGIN)
    text = TINY.replace("epochs: 4", "epochs: 1").replace("defences: [{pgd_at: {steps: 2}}]", "defences: [broken_on_worker, {pgd_at: {steps: 2}}]")
    suite = write_suite(tmp_path / "broken.yaml", text + f"plugins: [{plugin.name}]\n")
    done = bench(suite, tmp_path / "cache", tmp_path / "results", *EXECUTORS[name], "--quiet")
    assert done.returncode == 1, done.stderr[-3000:]
    log = next((tmp_path / "results" / "tiny" / "logs").glob("train-*.log"))
    assert "FAILED: train broken_on_worker seed=0: AttributeError" in done.stderr and f"traceback: {log}" in done.stderr
    trace = log.read_text()
    assert "ran on: " in trace and "Traceback" in trace and "broken_plugin.py" in trace and "no_such_attribute" in trace
    if name == "slurm":
        assert re.search(r"slurm job \d+.*; log .*\.err", trace)
    assert len(list((tmp_path / "cache" / "train").iterdir())) == 1  # pgd_at trained; nothing cached for the failure
    summary = run_json(tmp_path / "results", "tiny")
    assert summary["failed"] == 1 and summary["evaluated"] == 2  # the rest of the grid still ran


def test_a_second_run_on_another_executor_reuses_and_never_duplicates(tmp_path) -> None:
    need("slurm")
    suite = write_suite(tmp_path / "tiny.yaml", TINY)
    cache = tmp_path / "cache"
    # the first run's Slurm job pauses in epoch 2 (claim alive): still training when the second starts, however slow the machine
    first = bench(suite, cache, tmp_path / "r1", "--executor", "slurm", wait=False, BENCH_PAUSE="train-batch:2:0=20")
    _worker_pid(cache)  # the first run's Slurm job is training
    second = bench(suite, cache, tmp_path / "r2", "--workers", "2")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (err[-2000:], second.stderr[-2000:])
    # the second run either sees the claim itself, or hands the task to a worker that waits for it
    waited = re.search(r"train pgd_at seed=0: running elsewhere \(\S+ pid \d+\); will reuse it", second.stderr)
    assert waited or re.search(r"\] reused train pgd_at seed=0", second.stderr), second.stderr[-2000:]
    runs = [run_json(tmp_path / r, "tiny") for r in ("r1", "r2")]
    assert sum(ran(r) for r in runs) == runs[0]["planned"]  # every task computed exactly once
    assert runs[0]["trained"] == 1 and runs[1]["trained"] == 0 and runs[1]["reused"] >= 1
    pd.testing.assert_frame_equal(metrics(tmp_path / "r1", "tiny"), metrics(tmp_path / "r2", "tiny"))


SHARDS = """\
name: shards
dataset: {synthetic: {num_classes: 4, size: 12, n_train: 256, n_test: 80}}
model: {tiny_cnn: {width: 8}}
threat: {norm: Linf, eps: 24/255}
train: {epochs: 1, batch_size: 32, val_fraction: 0.125, val_attack: {steps: 2}}
defences: [standard]
eval: {n_examples: 80, batch_size: 16}
attacks:
  - {autoattack: {version: custom, attacks: [apgd-ce, apgd-t], n_iter: 5, n_target_classes: 2}}
  - {autoattack: {version: custom, attacks: [apgd-ce, apgd-t], n_iter: 5, n_target_classes: 2, shards: 3}}
  - {pgd: {steps: 3, init: none}}
  - {pgd: {steps: 3, init: none, shards: 2}}
  - {pgd: {steps: 3, shards: 2}}
  - {pgd: {steps: 3, shards: 4}}
"""


def test_sharded_evaluation_merges_to_the_unsharded_per_sample_flags(tmp_path, capsys) -> None:
    suite = write_suite(tmp_path / "shards.yaml", SHARDS)
    cache = tmp_path / "cache"
    assert main(["run", str(suite), "--device", "cpu", "--quiet", "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r")]) == 0
    plan, store = expand(load_suite(suite)), Store(cache)
    assert [len(e.shards) for e in plan.eval_jobs] == [0, 3, 0, 2, 2, 4]
    assert all(store.has("shard", s.key) for s in plan.shard_jobs)  # each shard is an entry of its own
    flags = [store.read_npz("eval", e.key, "flags.npz") for e in plan.eval_jobs]
    sizes = [len(store.read_npz("shard", k, "flags.npz")["sample_id"]) for k in plan.eval_jobs[1].shards]
    assert sizes == [32, 16, 32] and len(flags[1]["sample_id"]) == 80
    # deterministic attacks (AutoAttack seeds itself; PGD without random start): identical to unsharded
    for unsharded, sharded in ((0, 1), (2, 3)):
        for name in ("sample_id", "clean", "robust"):
            assert np.array_equal(flags[unsharded][name], flags[sharded][name]), (unsharded, name)
    # random start: each batch is seeded by the evaluation and its index, so 2 and 4 shards agree
    assert all(np.array_equal(flags[4][k], flags[5][k]) for k in ("sample_id", "clean", "robust"))
    assert 0 < flags[1]["robust"].sum() < flags[1]["clean"].sum()  # the attacks did something
    attacks = [e.spec["attack"] for e in plan.eval_jobs]  # `shards` is keyed only when above 1
    assert [a.get("shards") for a in attacks] == [None, 3, None, 2, 2, 4]
    capsys.readouterr()
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    assert "autoattack shard 2/3 on" in capsys.readouterr().out


def test_bench_status_reads_the_cache_and_the_claims(tiny_reference, tmp_path, capsys) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(tiny_reference["cache"], cache)
    plan, store = expand(load_suite(tiny_reference["suite"])), Store(cache)
    running, failed, left = plan.eval_jobs[0], plan.eval_jobs[1], plan.sanity_jobs[0]
    for job in (running, failed, left):
        store.discard(job.kind, job.key)
    assert store.try_claim("eval", running.key)
    logs = tmp_path / "results" / "tiny" / "logs"
    logs.mkdir(parents=True)
    (logs / f"eval-{failed.key[:12]}.log").write_text("Traceback ...")
    args = ["status", str(tiny_reference["suite"]), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "results")]
    assert main(args) == 0
    out = capsys.readouterr().out
    n = len(plan.tasks)
    assert f"{n - 3} done, 1 running, 1 failed, 1 left of {n} tasks" in out
    assert re.search(rf"running +{re.escape(running.label)} .* on \S+ pid {os.getpid()} for \d+s", out)
    assert re.search(rf"failed +{re.escape(failed.label)} .*traceback: .*eval-{failed.key[:12]}\.log", out)
    assert re.search(rf"left +{re.escape(left.label)}", out)
    store.release("eval", running.key)


def test_a_missing_extra_or_unreachable_cluster_is_a_one_line_error(tiny_reference, tmp_path, capsys, monkeypatch) -> None:
    args = ["run", str(tiny_reference["suite"]), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--quiet"]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    assert main([*args, "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'robustness-bench[ray]'" in err
    monkeypatch.setitem(sys.modules, "submitit", None)
    monkeypatch.delitem(sys.modules, "bench.engine.executors.slurm", raising=False)
    assert main([*args, "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'robustness-bench[slurm]'" in err
    monkeypatch.delitem(sys.modules, "submitit")
    monkeypatch.delitem(sys.modules, "bench.engine.executors.slurm", raising=False)
    if importlib.util.find_spec("submitit") is not None:
        monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
        assert main([*args, "--executor", "slurm"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no `sbatch` on PATH" in err and "scripts/slurm-up" in err
    assert main([*args, "--workers", "0"]) == 2
    assert main([*args, "--executor", "ray", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "bench: error: --workers: must be a positive number of processes or auto, got 0",
        "bench: error: --workers: only for --executor local (the ray cluster decides how many run at once)",
    ]
    assert not (tmp_path / "r").exists()


def test_an_unreachable_cluster_is_a_one_line_error(tiny_reference, tmp_path) -> None:
    need("slurm")
    need("ray")
    common = [tiny_reference["suite"], tmp_path / "c", tmp_path / "r"]
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    down = write_suite(tmp_path / "slurm.conf", re.sub(r"(?m)^SlurmctldPort=.*\n", "", conf) + "SlurmctldPort=9\n")  # nobody listens
    done = bench(*common, "--executor", "slurm", SLURM_CONF=str(down))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot reach the Slurm controller (sinfo: " in done.stderr and "connect failure" in done.stderr
    done = bench(*common, "--executor", "ray", "--ray-address", "127.0.0.1:9")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--ray-address 127.0.0.1:9: cannot join the Ray cluster" in done.stderr


def test_an_executor_config_file_sets_the_executor_and_flags_win(tmp_path, capsys) -> None:
    from bench.engine.executors import executor_config

    path = write_suite(tmp_path / "exec.yaml", "executor: slurm\nslurm: {partition: gpu, gpus: 1, time_min: 240}\n")
    config = executor_config(path, slurm_gpus=2, workers=None)
    assert config.name == "slurm" and config.options == {"partition": "gpu", "gpus": 2, "time_min": 240}
    assert executor_config(path, name="local").name == "local"
    bad = write_suite(tmp_path / "bad.yaml", "executor: slurm\nslurm: {partitions: gpu}\n")
    assert main(["run", str(SMOKE), "--executor-config", str(bad), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "slurm: unknown keys ['partitions']" in err
    assert main(["run", str(SMOKE), "--executor", "slurm", "--slurm-gpus", "-1", "--cache-dir", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err == "bench: error: slurm gpus: expected an integer >= 0, got -1\n"


class Recording(Executor):
    """A remote-style executor whose 'workers' are threads that write an empty entry for each task
    after a pause, report 1.5 s of work, and record how many tasks were in flight at once."""

    name = "recording"

    def __init__(self, store: Store, slots: int | None) -> None:
        self.store, self.slots = store, slots
        self.pool = ThreadPoolExecutor(8)
        self.lock = threading.Lock()
        self.flying = self.most = 0
        self.order: list[str] = []

    def submit(self, task) -> Future:
        def work() -> WorkerResult:
            with self.lock:
                self.flying += 1
                self.most = max(self.most, self.flying)
            time.sleep(0.05)
            with self.store.writer(task.kind, task.key) as tmp:
                (tmp / "done").write_text("")
            with self.lock:
                self.flying -= 1
            return WorkerResult("a thread", ran=True, seconds=1.5)

        self.order.append(task.kind)
        return self.pool.submit(work)


@pytest.mark.parametrize("slots", [1, 2, None])
def test_the_scheduler_fills_the_executor_slots_longest_chain_first(tmp_path, slots) -> None:
    """No more tasks are handed over than the executor runs at once; with free choice, the shared
    start and the trainings (which everything else waits for) go before evaluations; the seconds
    reported are the worker's, not the time the task waited in a queue."""
    suite = write_suite(tmp_path / "s.yaml", TINY.replace("defences: [{pgd_at: {steps: 2}}]", "defences: [standard, {pgd_at: {steps: 2}}, {fr: {steps: 2}}]"))
    plan = expand(load_suite(suite))
    store = Store(tmp_path / "cache")
    executor = Recording(store, slots)
    result = run_tasks(plan, store, executor, Progress(False), tmp_path / "logs")
    assert {o.status for o in result.outcomes} == {"ran"} and len(result.outcomes) == len(plan.tasks)
    assert executor.most <= (slots or len(plan.tasks))
    first = ["prefix", "train", "train", "train"] if slots else ["prefix", "train"]  # (None: only these are ready at first)
    assert executor.order[: len(first)] == first
    assert {o.seconds for o in result.outcomes} == {1.5}


def _in_namespace(proc: subprocess.Popen, path: Path) -> Path:
    """``path`` as the worker node's processes see it (its own mount namespace)."""
    return Path(f"/proc/{proc.pid}/root") / path.relative_to("/")


def test_ray_without_a_shared_file_system_transfers_entries_and_survives_a_dead_node(smoke_reference, tmp_path) -> None:
    """A real two-node Ray cluster whose worker node cannot see the driver's cache (tests/raycluster.py):
    without --ray-transfer the run stops within seconds naming the node; with it the smoke suite gives
    the local executor's results, though the worker node is killed mid-training (a new one takes over)."""
    from tests.raycluster import Cluster, can_isolate

    need("ray")
    reason = can_isolate()
    assert reason is None, f"cannot start an isolated Ray worker node: {reason}"
    cache, results = tmp_path / "cache", tmp_path / "results"
    cluster = Cluster(tmp_path, cache)
    try:
        first = cluster.add_worker()
        cluster.wait_cpus(1)
        common = ["--executor", "ray", "--ray-address", cluster.address]
        t0 = time.monotonic()
        done = bench(SMOKE, cache, results, *common, RAY_AUTH_MODE="disabled", BENCH_ENTRY_GRACE_S="3")
        assert done.returncode == 2 and time.monotonic() - t0 < 90, done.stderr[-3000:]
        error = done.stderr.strip().splitlines()[-1]
        assert error.startswith("bench: error: the worker on node ") and "not in the driver's cache at " + str(cache) in error
        assert "--ray-transfer" in error and not list(cache.glob("train/*"))
        assert list(_in_namespace(first, cache).glob("train/*"))  # the worker wrote into its own disk
        for path in _in_namespace(first, cache).iterdir():  # an empty disk again: the next run trains there
            shutil.rmtree(path)

        run = bench(SMOKE, cache, results, *common, "--ray-transfer", wait=False, RAY_AUTH_MODE="disabled")
        deadline = time.monotonic() + 120
        while not list(_in_namespace(first, cache).glob("partial/train-*/state.pt")):  # one epoch in: mid-training
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
            time.sleep(0.05)
        training = {p.name.split("-", 1)[1] for p in _in_namespace(first, cache).glob("partial/train-*")}
        assert cluster.kill_worker(first) >= 2  # the node's raylet and its worker processes
        assert not any((cache / "train" / key).exists() for key in training)  # it died before its entry came back
        cluster.add_worker()
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        pd.testing.assert_frame_equal(metrics(results, "smoke"), metrics(smoke_reference, "smoke"))
        store = Store(cache)
        assert all(store.problem(kind, key) is None for kind, key in store.entries())
        assert not list(cache.glob("partial/*")) and not list(cache.glob("tmp/*"))  # nothing half-written in the driver's cache
        # evaluations of these trainings on a node that has none of them: each training crosses once
        second = cluster.workers[-1]
        for path in _in_namespace(second, cache).iterdir():
            shutil.rmtree(path)
        done = bench(SMOKE, cache, tmp_path / "r2", *common, "--ray-transfer", "--limit", "100", RAY_AUTH_MODE="disabled")
        assert done.returncode == 0, done.stderr[-3000:]
        assert run_json(tmp_path / "r2", "smoke")["trained"] == 0
        line = re.search(r"ray transfer: (\d+) inputs needed by tasks, (\d+) fetched onto (\d+) nodes \((\d+) distinct.*", done.stderr)
        needed, fetched, nodes, distinct = map(int, line.groups())
        assert (fetched, distinct, nodes) == (2, 2, 1) and needed > fetched, line.group(0)
    finally:
        cluster.stop()
