"""Crash and resume: real SIGKILLs at several points of training and evaluation, then a re-run that
must end bit-identical (CPU) to an uninterrupted run; and the WA trajectory invariance."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.progress import Progress
from bench.engine.status import suite_status
from bench.engine.store import Store
from bench.engine.worker import WorkerContext
from bench.plan.expand import expand
from bench.suite.load import load_suite
from bench.training.train import health_check, train_model
from tests.conftest import ROOT, write_suite

SUITE = """\
name: resume
dataset: {synthetic: {num_classes: 4, size: 12, n_train: 256, n_test: 64}}
model: {tiny_cnn: {width: 8}}
threat: {norm: Linf, eps: 24/255}
train:
  epochs: 4
  batch_size: 32
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5e-4}
  schedule: {name: piecewise, milestones: [2], gamma: 0.1}
  val_fraction: 0.125
  selection: best_val
  val_attack: {steps: 2}
defences: [{pgd_at: {steps: 2}}]
wa: [none, swa, {kind: ema, decay: 0.9}]
attacks: [{pgd: {steps: 5}}]
eval: {n_examples: 64, batch_size: 16}
seeds: [0]
"""


def bench_run(suite: Path, cache: Path, results: Path, fault: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "BENCH_FAULT"}
    environ.update(env)
    if fault:
        environ["BENCH_FAULT"] = fault
    cmd = [sys.executable, "-m", "bench", "run", str(suite), "--cache-dir", str(cache), "--results-dir", str(results), "--device", "cpu", "--quiet"]
    return subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)


def entry_contents(cache: Path) -> dict[str, object]:
    """Every weights tensor, log value (minus timings) and per-sample flag of a finished cache."""
    store = Store(cache)
    out: dict[str, object] = {}
    for kind, key in store.entries():
        for name in store.files(kind, key):
            if name == "state.pt":  # a shared start's saved state: its weights (the rest holds timings)
                out[f"{kind}/{key}/{name}"] = store.load_weights(kind, key, name, torch.device("cpu"))["model"]
            elif name.endswith(".pt"):
                out[f"{kind}/{key}/{name}"] = store.load_weights(kind, key, name, torch.device("cpu"))
            elif name.endswith(".npz"):
                out[f"{kind}/{key}/{name}"] = store.read_npz(kind, key, name)
            elif name == "log.jsonl":
                lines = store.read_bytes(kind, key, name).decode().splitlines()
                out[f"{kind}/{key}/{name}"] = [{k: v for k, v in __import__("json").loads(x).items() if k != "seconds"} for x in lines]
    return out


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        other = b[name]
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), torch.Tensor):
            assert all(torch.equal(value[k], other[k]) for k in value), name  # bit-identical weights
        elif isinstance(value, dict):
            assert all(np.array_equal(value[k], other[k]) for k in value), name
        else:
            assert value == other, name


def finished(base: Path, text: str) -> tuple[Path, dict[str, object]]:
    """The suite ``text`` run uninterrupted in ``base``: its file and its cache's contents."""
    suite = write_suite(base / "suite.yaml", text)
    done = bench_run(suite, base / "cache", base / "results")
    assert done.returncode == 0, done.stderr
    return suite, entry_contents(base / "cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    return finished(tmp_path_factory.mktemp("reference"), SUITE)


# Kill points: before any checkpoint; mid-epoch after two completed epochs; half-way through writing
# the state of epoch 2 (the state of epoch 1 must be used); half-way through the last state write;
# during an evaluation after two of its four batches were saved.
KILLS = ["train-batch:1:2", "train-batch:3:1", "train-ckpt:2", "train-ckpt:4", "eval-batch:2"]


@pytest.mark.parametrize("fault", KILLS)
def test_killed_run_resumes_and_ends_bit_identical(reference, tmp_path: Path, fault: str) -> None:
    suite, expected = reference
    cache = tmp_path / "cache"
    killed = bench_run(suite, cache, tmp_path / "r", fault=fault, BENCH_EVAL_SAVE_S="0")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = sorted(p.name.split("-")[0] for p in (cache / "partial").iterdir())
    assert partial == (["eval"] if fault.startswith("eval") else ["train"])
    resumed = bench_run(suite, cache, tmp_path / "r", BENCH_EVAL_SAVE_S="0")
    assert resumed.returncode == 0, resumed.stderr
    assert_same(entry_contents(cache), expected)
    assert list((cache / "partial").iterdir()) == []  # cleaned once the entries are complete
    manifest = Store(cache).read_json("train", next(k for kind, k in Store(cache).entries() if kind == "train"), "manifest.json")
    resumed_from = {"train-batch:1:2": None, "train-batch:3:1": 2, "train-ckpt:2": 1, "train-ckpt:4": 3, "eval-batch:2": None}
    assert manifest["resumed_from_epoch"] == resumed_from[fault]


def test_external_sigkill_at_an_arbitrary_moment_resumes(reference, tmp_path: Path) -> None:
    """Not a planted fault: the parent kills the run as soon as its first epoch state exists."""
    suite, expected = reference
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "bench", "run", str(suite), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((cache / "partial").glob("train-*/state.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert bench_run(suite, cache, tmp_path / "r").returncode == 0
    assert_same(entry_contents(cache), expected)


def test_a_damaged_resume_state_is_reported_and_training_restarts(reference, tmp_path: Path) -> None:
    suite, expected = reference
    cache = tmp_path / "cache"
    assert bench_run(suite, cache, tmp_path / "r", fault="train-batch:3:0").returncode == -signal.SIGKILL
    state = next((cache / "partial").glob("train-*/state.pt"))
    state.write_bytes(state.read_bytes()[:1000] + b"garbage")
    done = bench_run(suite, cache, tmp_path / "r")
    assert done.returncode == 0 and "is unusable" in done.stderr and "training from epoch 1" in done.stderr
    assert_same(entry_contents(cache), expected)


def _train(text: str, tmp_path: Path) -> dict:
    plan = expand(load_suite(write_suite(tmp_path / "wa.yaml", text)))
    ctx = WorkerContext(plan, Store(tmp_path / "cache"), torch.device("cpu"))
    job = plan.train_jobs[0]
    return train_model(job, plan.suite, ctx.splits, ctx.train_data, ctx.device, Progress(False)).raw.states


def test_raw_weights_are_bit_identical_with_and_without_averagers(tmp_path: Path) -> None:
    with_wa = _train(SUITE, tmp_path)
    without = _train(SUITE.replace("wa: [none, swa, {kind: ema, decay: 0.9}]", "wa: [none]"), tmp_path)
    for checkpoint in ("last", "best_val"):
        assert all(torch.equal(with_wa[checkpoint][k], without[checkpoint][k]) for k in without[checkpoint])


def test_adding_an_averager_keeps_every_evaluation(reference, tmp_path: Path) -> None:
    """The eval keys of raw and existing averages do not depend on the run's other averagers."""
    a = expand(load_suite(write_suite(tmp_path / "a.yaml", SUITE)))
    b = expand(load_suite(write_suite(tmp_path / "b.yaml", SUITE.replace("decay: 0.9}]", "decay: 0.9}, {kind: ema, decay: 0.5}]"))))
    assert a.train_jobs[0].key != b.train_jobs[0].key  # a run of its own: entries are immutable
    assert {e.key for e in a.eval_jobs} <= {e.key for e in b.eval_jobs}


def test_health_flags_chance_and_robust_collapse() -> None:
    health: dict = {}
    health_check(health, {"val_clean": 0.11, "val_robust": 0.05}, epoch=2, epochs=10, num_classes=10, best_robust=0.0)
    assert health == {"at_chance_epoch": 3}
    health = {}
    health_check(health, {"val_clean": 0.8, "val_robust": 0.45}, epoch=5, epochs=10, num_classes=10, best_robust=0.5)
    assert health == {}  # a small drop is noise, not a collapse
    health_check(health, {"val_clean": 0.8, "val_robust": 0.02}, epoch=6, epochs=10, num_classes=10, best_robust=0.5)
    assert health == {"robust_collapse_epochs": [7]}


def test_health_is_flagged_under_the_leaderboard() -> None:
    from bench.report.aggregate import health_flags

    out = health_flags({"at_chance_epoch": 3, "robust_collapse_epochs": [7, 9]}, "an earlier flag")
    assert out["flag_train_at_chance"] and out["flag_robust_collapse"]
    assert out["flags"] == (
        "an earlier flag; training: validation accuracy still at chance after epoch 3; "
        "training: validation robust accuracy collapsed at epoch 7, 9 (catastrophic overfitting?)"
    )
    assert health_flags({}, "")["flags"] == "" and not health_flags({}, "")["flag_robust_collapse"]


# ------------------------------------------------------------------ shared starts (prefix tasks)

SHARED = SUITE.replace("defences: [{pgd_at: {steps: 2}}]", "defences: [{pgd_at: {steps: 2}}, {fr: {steps: 2}}]").replace(
    "wa: [none, swa, {kind: ema, decay: 0.9}]", "wa: [none, swa]"
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    return finished(tmp_path_factory.mktemp("shared"), SHARED)


def test_trainings_sharing_a_start_end_bit_identical_to_training_from_scratch(shared, tmp_path: Path) -> None:
    """PGD-AT's first two epochs are trained once (FR starts at the first milestone, 2); both runs
    continue from that state and end with the weights and logs of runs trained from epoch 1."""
    suite, contents = shared
    plan = expand(load_suite(suite))
    (prefix,) = plan.prefix_jobs
    assert (prefix.epochs, prefix.defence.name, prefix.shared_by) == (2, "pgd_at", ("fr", "pgd_at"))
    assert [(t.display, t.start, t.epochs) for t in plan.train_jobs] == [("pgd_at", prefix.key, 2), ("fr", prefix.key, 2)]
    assert [t.kind for t in plan.tasks[:3]] == ["prefix", "train", "train"]
    ctx = WorkerContext(plan, Store(tmp_path / "scratch"), torch.device("cpu"))
    for job in plan.train_jobs:
        scratch = train_model(job, plan.suite, ctx.splits, ctx.train_data, ctx.device, Progress(False))
        for tag, sel in [("raw", scratch.raw), *((f"{wa.kind}-", s) for wa, s in scratch.averaged.items())]:
            for checkpoint, state in sel.states.items():
                (name,) = [n for n in contents if n.startswith(f"train/{job.key}/weights/{tag}") and n.endswith(f"/{checkpoint}.pt")]
                assert all(torch.equal(state[k], contents[name][k]) for k in state), name
        assert contents[f"train/{job.key}/log.jsonl"] == [{k: v for k, v in r.items() if k != "seconds"} for r in scratch.log]
    store = Store(suite.parent / "cache")
    for job in plan.train_jobs:
        assert store.read_json("train", job.key, "manifest.json")["started_from"] == {"prefix": prefix.key, "epochs": 2}
    fr_log = contents[f"train/{plan.train_jobs[1].key}/log.jsonl"]
    assert [(r["train_fr"], r["train_fr_active"]) for r in fr_log] == [(0.0, 0.0), (0.0, 0.0), (fr_log[2]["train_fr"], 1.0), (fr_log[3]["train_fr"], 1.0)]


@pytest.mark.parametrize("fault", ["train-ckpt:2", "train-batch:3:1"])
def test_a_killed_shared_start_or_continuation_resumes_bit_identical(shared, tmp_path: Path, fault: str) -> None:
    """Killed half-way through the prefix's last state write, or in the first continuing run."""
    suite, expected = shared
    cache = tmp_path / "cache"
    assert bench_run(suite, cache, tmp_path / "r", fault=fault).returncode == -signal.SIGKILL
    partial = sorted(p.name.split("-")[0] for p in (cache / "partial").iterdir())
    assert partial == (["prefix"] if fault == "train-ckpt:2" else ["train"])
    assert bench_run(suite, cache, tmp_path / "r").returncode == 0
    assert_same(entry_contents(cache), expected)


def test_a_shared_start_is_not_trained_again_once_its_trainings_exist(shared, tmp_path: Path) -> None:
    suite, _ = shared
    cache = tmp_path / "cache"
    shutil.copytree(suite.parent / "cache", cache)
    store = Store(cache)
    (prefix,) = expand(load_suite(suite)).prefix_jobs
    store.discard("prefix", prefix.key)
    again = bench_run(suite, cache, tmp_path / "r")
    assert again.returncode == 0, again.stderr
    assert not store.has("prefix", prefix.key)  # every training that reads it is done: not recomputed
    status = suite_status(expand(load_suite(suite)), store, tmp_path / "logs")
    assert "0 left" in status.splitlines()[0] and "(not needed: what reads it is done)" in status
