"""What a new user trips over: --set overrides, did-you-mean, eps messages, ~ in paths, --device,
zoo rows checked at validation, build_model's shape, data status NAME, plan-wide progress."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import bench
from bench.commands.cli import main
from bench.core.errors import ConfigError
from bench.core.progress import Progress
from bench.engine.worker import plan_for
from bench.plan.estimate import Estimator
from bench.plan.expand import expand
from bench.suite.load import load_suite
from tests.conftest import SUITES
from tests.fakes import FakeTask

SMOKE = SUITES / "smoke.yaml"


def error_of(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """The one stderr line of a CLI call that must exit 2."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------- overrides


def test_overrides_set_keys_as_yaml_values_before_validation() -> None:
    sets = [
        "train.epochs=5",
        "eval.n_examples=100",
        "wa=[none, ema]",
        "threat.eps=8/255",
        "eval.eps=[0.05]",
        "defences.1.pgd_at.steps=5",
    ]
    suite = load_suite(SMOKE, sets)
    assert suite.train.epochs == 5 and suite.eval.n_examples == 100
    assert [w and w.kind for w in suite.wa] == [None, "ema"]
    assert suite.threat.eps_text == "8/255" and [t.eps_text for t in suite.eval_eps] == ["0.05"]
    assert suite.defences[1].params.steps == 5 and suite.train.batch_size == 32  # the rest as in the file
    assert load_suite(SMOKE, {"train.epochs": 5, "defences.1.pgd_at.steps": 5}).defences[1].params.steps == 5
    plain = load_suite(SMOKE)
    assert plain.overrides == () and plain.train.epochs == 4 and plain.defences[1].params.steps == 3
    # a plug-in written by name takes parameters; the suite's own file is unchanged
    assert load_suite(SMOKE, ["defences.0.standard=null", "attacks.0.fgsm.n_examples=50"]).attacks[0].n_examples == 50


def test_overrides_are_part_of_the_digest_and_workers_replan_with_them() -> None:
    plain, two = load_suite(SMOKE), load_suite(SMOKE, ["train.epochs=2", "wa=none", "analysis=null"])
    assert (
        plain.digest != two.digest != load_suite(SMOKE, {"train.epochs": 2, "wa": "none", "analysis": None}).digest
    )  # the text is hashed
    plan = expand(two)
    task = plan.train_jobs[0]
    assert task.suite.overrides == ("train.epochs=2", "wa=none", "analysis=null")
    again = plan_for(task.suite)  # what a worker process does with the task's SuiteRef
    assert again.task(task.key) is not None and again.suite.train.epochs == 2
    assert {t.key for t in again.tasks} == {t.key for t in plan.tasks}
    assert not {t.key for t in expand(plain).train_jobs} & {t.key for t in plan.train_jobs}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("train.epochs=0", "smoke.yaml (with --set train.epochs=0): train.epochs: must be at least 1"),
        (  # an error between keys (SWA starts at the first milestone) names the override of the other key
            "train.schedule.milestones=[7]",
            "smoke.yaml (with --set train.schedule.milestones=[7]): wa[1].start: 7 is not before the end of training",
        ),
        (  # and so does a planner error
            "defences=[pgd_at]",
            "smoke.yaml (with --set defences=[pgd_at]): analysis.rows[0]: no leaderboard row 'standard'",
        ),
        ("trian.epochs=2", "trian: unknown key (did you mean 'train'?)"),
        ("train.epoch=2", "train.epoch: unknown key (did you mean 'epochs'?)"),
        (
            "wa=[none, swaa]",
            "wa[1]: expected none, swa, ema or {kind: swa, start: ..., every: ...}, got 'swaa' (did you mean 'swa'?)",
        ),
        ("threat.eps=300", "threat.eps: must be in (0, 1] for Linf (pixel space), got 300"),
        ("wa=[", "smoke.yaml: --set wa: invalid YAML value '['"),
        ("defences.9.x=1", "smoke.yaml: --set defences.9.x: 9 is not an index of a list of 2"),
        ("train.epochs.x=1", "--set train.epochs.x: train.epochs is 4, not a mapping or list"),
        ("include=other.yaml", "--set include: include cannot be overridden"),
        ("epochs", "--set: expected KEY=VALUE such as train.epochs=2, got 'epochs'"),
    ],
)
def test_bad_overrides_give_the_suite_one_line_errors(
    capsys: pytest.CaptureFixture, setting: str, expected: str
) -> None:
    assert expected in error_of(capsys, "validate", str(SMOKE), "--set", setting)


# ------------------------------------------------------------------------ did you mean, eps rules


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"defences": [{"trades": {"preset": "offical"}}]},
            "unknown preset 'offical' (did you mean 'official'?); trades has: official",
        ),
        (
            {"train.selection": "bestval"},
            "expected one of 'last', 'best_val', got 'bestval' (did you mean 'best_val'?)",
        ),
        ({"train.optimizer.name": "adm"}, "got 'adm' (did you mean 'adam'?)"),
        ({"threat.norm": "linf"}, "expected Linf, L2 or L1, got 'linf' (did you mean 'Linf'?)"),
        (
            {"defences.1.pgd_at.eps": "4/255"},
            "defences[1].pgd_at.eps: not a parameter: the radius comes from the suite's threat.eps",
        ),
        (
            {"attacks.1.pgd.eps": 0.1},
            "attacks[1].pgd.eps: not a parameter: the radius comes from the suite's threat.eps",
        ),
    ],
)
def test_enum_like_fields_suggest_and_eps_points_at_the_threat(overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_suite(SMOKE, overrides)
    assert expected in str(e.value)


def test_library_attack_checks_eps_like_a_suite() -> None:
    model = bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12))
    x, y = torch.rand(2, 1, 12, 12), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match=r"eps: must be in \(0, 1\] for Linf \(pixel space\), got 300"):
        bench.attack("fgsm", model, x, y, eps=300)
    with pytest.raises(ConfigError, match="did you mean 'L2'"):
        bench.attack("fgsm", model, x, y, eps=0.5, norm="l2")
    assert bench.attack("fgsm", model, x, y, eps="8/255").shape == x.shape


# ------------------------------------------------------------------------------ paths and device


def test_tilde_is_expanded_in_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.core.files import default_cache_dir
    from bench.data import data_roots
    from bench.engine.store import Store
    from bench.report.folder import results_folder

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BENCH_DATA", "~/env-data")
    monkeypatch.setenv("BENCH_CACHE", "~/env-cache")
    monkeypatch.setenv("XDG_DATA_HOME", "~/xdg")
    (tmp_path / "inc.yaml").write_text("seeds: [3]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.yaml").write_text("include: ~/inc.yaml\n" + SMOKE.read_text().replace("seeds: [0]\n", ""))
    suite = load_suite("~/sub/s.yaml")
    assert suite.path == tmp_path / "sub" / "s.yaml" and suite.seeds == [3]
    assert data_roots("~/flag-data")[:3] == [tmp_path / "flag-data", tmp_path / "env-data", tmp_path / "xdg" / "bench"]
    assert default_cache_dir() == tmp_path / "env-cache" and Store("~/c").root == tmp_path / "c"
    assert results_folder("~/r", suite) == tmp_path / "r" / "smoke"


def test_unknown_or_missing_device_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    assert "--device gpu: unknown device (use auto, cpu, cuda or cuda:N)" in error_of(
        capsys, "run", str(SMOKE), "--device", "gpu", *out
    )
    if not torch.cuda.is_available():
        assert "CUDA is not available on this machine" in error_of(capsys, "run", str(SMOKE), "--device", "cuda", *out)
        assert "CUDA is not available" in error_of(capsys, "analyze", str(SMOKE), "--device", "cuda:1", *out)
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()  # nothing written


# ---------------------------------------------------------------------------- zoo, models, data


@pytest.mark.parametrize(
    ("suite", "row", "expected"),
    [
        (
            "cifar10.yaml",
            "Carmon2019Unlabled",
            "zoo[0]: unknown cifar10 Linf model 'Carmon2019Unlabled' (did you mean 'Carmon2019Unlabeled'?)",
        ),
        (
            "cifar100.yaml",
            "Carmon2019Unlabeled",
            "zoo[0]: Carmon2019Unlabeled is a cifar10 model; this suite's dataset is cifar100",
        ),
        ("smoke.yaml", "Carmon2019Unlabeled", "zoo[0]: RobustBench reference rows need dataset cifar10 or cifar100"),
    ],
)
def test_zoo_rows_are_checked_at_validation(suite: str, row: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_suite(SUITES / suite, [f"zoo=[robustbench:{row}]"])
    assert expected in str(e.value)
    assert load_suite(SUITES / "cifar10.yaml", ["zoo=[robustbench:Carmon2019Unlabeled]"]).zoo == [
        "robustbench:Carmon2019Unlabeled"
    ]


def test_build_model_needs_the_input_shape() -> None:
    with pytest.raises(ConfigError, match=r"build_model\('resnet18'\): give num_classes and shape"):
        bench.build_model("resnet18")
    with pytest.raises(ConfigError, match="give shape"):
        bench.build_model("resnet18", num_classes=10)
    with pytest.raises(ConfigError, match=r"expected \(channels, height, width\)"):
        bench.build_model("tiny_cnn", num_classes=4, shape=(12, 12))
    assert bench.build_model("tiny_cnn", num_classes=4, shape=(3, 12, 12))(torch.rand(1, 3, 12, 12)).shape == (1, 4)


def test_data_status_takes_a_name_and_has_its_own_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "status", "synthetic"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthetic ") and "ok:" in lines[0]
    assert "unknown dataset 'cifar' (did you mean 'cifar10'" in error_of(capsys, "data", "status", "cifar")
    with pytest.raises(SystemExit) as e:
        main(["data", "status", "--help"])
    assert e.value.code == 0 and "usage: bench data status [-h] [--data-dir DATA_DIR] [name]" in capsys.readouterr().out


# -------------------------------------------------------------------------------------- progress



@dataclass(frozen=True)
class Named:
    name: str
    params: Any = None


def fake_plan() -> list[FakeTask]:
    train = [FakeTask("train", f"t{i}", f"train d{i}", {"train": {"epochs": 10}}, Named("pgd_at")) for i in range(2)]
    evals = [FakeTask("eval", f"e{i}", f"eval {i}", attack=Named("pgd")) for i in range(2)]
    return [*train, FakeTask("sanity", "s0", "sanity"), FakeTask("analysis", "a0", "analysis"), *evals]


def test_progress_counts_every_kind_and_estimates_from_priors_then_measurements(capsys: pytest.CaptureFixture) -> None:
    tasks = fake_plan()
    est = Estimator({"t0": 100.0, "t1": 100.0, "s0": 10.0, "a0": 20.0, "e0": 5.0, "e1": 5.0})
    prog = Progress(True, estimator=est, heartbeat_s=3600)
    prog.start_plan(tasks)
    assert prog.eta() == (240.0, [])  # before any measurement: the priors
    prog.started(tasks[0])
    prog.epoch_done(tasks[0], 1, 10, 2.0)  # one epoch measured (passed on to the estimator): 2 s per epoch for this defence
    assert est.estimate(tasks[1]) == 20.0 and est.estimate(tasks[0]) == 18.0
    est.ran(tasks[0], 50.0)  # twice its prior (the scheduler records it): the other kinds' priors are not rescaled
    prog.finished(tasks[0], "ran", 50.0)
    assert est.estimate(tasks[2]) == 10.0
    prog.finished(tasks[4], "cached")
    line = capsys.readouterr().err.strip()  # printed before the cached one was counted
    assert (
        line.startswith("[done 1/6, running 0, left 5] ran train d0 (50.0s)") and "elapsed 0s, ETA 1m00s" in line
    )  # 20 + 10 + 20 + 5 + 5
    prog.close()


def test_guessed_priors_are_corrected_across_kinds_by_what_was_measured() -> None:
    """Without a `bench profile` measurement the priors come from a guessed speed, off by about the same
    factor for every kind: a kind not measured yet takes the others' correction (geometric mean)."""
    prefix = FakeTask("prefix", "p0", "train pgd_at epochs 1-2", {"train": {"epochs": 2}}, Named("pgd_at"))
    tasks = [prefix, *fake_plan()]
    priors = {"p0": 20.0, "t0": 100.0, "t1": 100.0, "s0": 10.0, "a0": 20.0, "e0": 5.0, "e1": 5.0}
    guessed, measured = Estimator(priors, calibrated=False), Estimator(priors)
    for est in (guessed, measured):
        est.epoch_done(prefix, 1, 2, 2.0)  # 2 s for an epoch estimated at 10 s: the guess is 5x slow
    assert guessed.estimate(tasks[3]) == pytest.approx(2.0) and measured.estimate(tasks[3]) == 10.0
    assert guessed.estimate(tasks[1]) == pytest.approx(20.0)  # another defence's training: its prior x 0.2
    trades = FakeTask("train", "t9", "train trades", {"train": {"epochs": 10}}, Named("trades"))
    measured.priors["t9"] = 50.0
    assert measured.estimate(trades) == pytest.approx(10.0)  # a training not timed yet: the epochs' correction (0.2)
    measured.ran(prefix, 8.0)  # a prefix is training: 8 s for 20 estimated
    assert measured.estimate(trades) == pytest.approx(50.0 * (0.2 + 0.4) / 2)
    guessed.ran(tasks[3], 5.0)  # the sanity check took half its prior
    assert guessed.estimate(tasks[5]) == pytest.approx(5.0 * (0.2 * 0.5) ** 0.5)  # eval: geometric mean of train and sanity
    guessed.ratio.clear()
    assert guessed.estimate(tasks[4]) == 20.0  # nothing measured: the prior as it is


def test_progress_without_priors_says_what_is_not_timed_yet(capsys: pytest.CaptureFixture) -> None:
    tasks = fake_plan()
    est = Estimator()  # what the scheduler attaches to a progress display without one: no priors
    prog = Progress(True, estimator=est, heartbeat_s=3600)
    prog.start_plan(tasks)
    assert "ETA ?" in prog.timing()
    est.ran(tasks[0], 30.0)
    prog.finished(tasks[0], "ran", 30.0)
    assert prog.timing().endswith("ETA >30s (sanity, analysis, eval not timed yet)")
    prog.close()


def test_outside_a_terminal_a_line_comes_at_least_every_heartbeat(capsys: pytest.CaptureFixture) -> None:
    prog = Progress(True, heartbeat_s=0.2)
    assert not prog.tty  # pytest captures stderr: not a terminal
    prog.start_plan(fake_plan())
    for _ in prog.bar(iter(range(3)), 3, "train d0 epoch 1/10"):
        time.sleep(0.5)
    prog.close()
    beats = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  ... ")]
    assert (
        len(beats) >= 3 and "train d0 epoch 1/10: batch 1/3" in beats[0] and "[done 0/6, running 0, left 6]" in beats[0]
    )
    remote = Progress(True, heartbeat_s=0.1)  # tasks in other processes: the heartbeat names them
    remote.start_plan(tasks := fake_plan())
    for task in tasks[:5]:
        remote.started(task)
    time.sleep(0.5)
    remote.close()
    assert "  ... running train d0, train d1, sanity and 2 more · [done 0/6, running 5, left 1]" in capsys.readouterr().err
    quiet = Progress(False, heartbeat_s=0.05)
    quiet.start_plan(fake_plan())
    list(quiet.bar(iter(range(2)), 2, "x"))
    time.sleep(0.2)
    assert capsys.readouterr().err == "" and quiet._thread is None


def test_a_run_with_overrides_records_them_and_counts_every_task(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sets = [
        "train.epochs=2",
        "wa=[none]",
        "analysis={rows: [standard], n_images: 8, heatmap: false}",
        "attacks=[fgsm]",
        "eval.n_examples=64",
    ]
    args = [
        "run",
        str(SMOKE),
        "--cache-dir",
        str(tmp_path / "c"),
        "--results-dir",
        str(tmp_path / "r"),
        "--device",
        "cpu",
    ]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    err = capsys.readouterr().err
    assert "suite smoke: 7 tasks (2 train, 1 analysis, 2 sanity, 2 eval) on cpu" in err
    assert "[done 7/7, running 0, left 0]" in err and "ETA 0s" in err
    run = json.loads((tmp_path / "r" / "smoke" / "run.json").read_text())
    assert run["overrides"] == sets and run["trained"] == 2
    results = pd.read_csv(tmp_path / "r" / "smoke" / "results.csv")
    attacks = results[results["attack"] != "Worst case"]
    assert ((attacks["max_perturbation"] > 0) & (attacks["max_perturbation"] <= 24 / 255 + 1e-6)).all()
    assert "max_eps_violation" not in results
    assert set(results["best_epoch"]) <= {1, 2}  # counted from 1, like the console's "epoch 1/2"
    capsys.readouterr()
    report = ["report", str(SMOKE), "--cache-dir", str(tmp_path / "c")]
    assert main([*report, "--results-dir", str(tmp_path / "r2")]) == 1  # without the --set: other keys
    assert "nothing cached for suite smoke" in capsys.readouterr().err
    assert main([*report, "--results-dir", str(tmp_path / "r3"), *(x for s in sets for x in ("--set", s))]) == 0
