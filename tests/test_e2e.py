"""End to end: the smoke suite twice through the CLI; the second run computes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.commands.cli import main
from bench.core.stats import wilson
from bench.report.figures import training_figure
from tests.conftest import SUITES, write_suite


def run_cli(*args: str) -> int:
    return main([*args])


def smoke_without_analysis() -> str:
    """The smoke suite minus its analysis section (for variants that drop an analysed row)."""
    return "".join(line for line in (SUITES / "smoke.yaml").read_text().splitlines(True) if not line.startswith("analysis:"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("smoke")
    dirs = {"cache": base / "cache", "results": base / "results"}
    common = ["--cache-dir", str(dirs["cache"]), "--results-dir", str(dirs["results"]), "--device", "cpu", "--quiet"]
    assert run_cli("run", str(SUITES / "smoke.yaml"), *common) == 0
    dirs["first"] = json.loads((dirs["results"] / "smoke" / "run.json").read_text())
    dirs["board_first"] = (dirs["results"] / "smoke" / "leaderboard.md").read_text()
    assert run_cli("run", str(SUITES / "smoke.yaml"), *common) == 0
    dirs["second"] = json.loads((dirs["results"] / "smoke" / "run.json").read_text())
    return dirs


def test_first_run_trains_once_per_training_config_and_evaluates_everything(smoke_run) -> None:
    first = smoke_run["first"]
    # 2 defences x 1 seed = 2 trainings; WA (none, swa) shares each run: 2 x 2 weights x 2 attacks evals
    assert first["trained"] == 2 and first["cached_train"] == 0
    assert first["evaluated"] == 8 and first["cached_eval"] == 0
    # every task: 2 trainings, 8 evaluations, 4 sanity checks (one per weights), 2 analyses
    assert first["planned"] == 16 and first["failed"] == 0


def test_second_run_trains_and_evaluates_nothing(smoke_run) -> None:
    second = smoke_run["second"]
    assert second["trained"] == 0 and second["evaluated"] == 0
    assert second["cached_train"] == 2 and second["cached_eval"] == 8


def test_leaderboard_lists_every_row_and_column(smoke_run) -> None:
    board = (smoke_run["results"] / "smoke" / "leaderboard.md").read_text()
    assert board == smoke_run["board_first"]  # re-rendered identically from the cache
    header = next(line for line in board.splitlines() if "| Defence" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == ["Rank", "Defence", "Clean", "FGSM", "PGD-10", "Worst case"]
    for row in ("standard", "pgd_at", "standard+wa", "pgd_at+wa"):
        assert any(f"| {row} " in line for line in board.splitlines()), row
    assert "ε = 24/255" in board


def test_results_csv_is_tidy_and_worst_case_is_the_per_sample_and(smoke_run) -> None:
    df = pd.read_csv(smoke_run["results"] / "smoke" / "results.csv")
    assert set(df["attack"]) == {"FGSM", "PGD-10", "Worst case"}
    assert len(df) == 4 * 3  # 4 (run, weights) x (2 attacks + worst)
    for col in ("train_key", "eval_key", "defence_version", "attack_version", "torch", "device", "eval_seconds"):
        assert col in df.columns
    for _, run in df.groupby("display_name"):
        worst = run[run["attack"] == "Worst case"]["robust_acc"].item()
        assert worst <= run[run["attack"] != "Worst case"]["robust_acc"].min() + 1e-12
        assert (run["robust_acc"] <= run["clean_acc"] + 1e-12).all()


def test_results_carry_intervals_and_paired_comparisons(smoke_run) -> None:
    df = pd.read_csv(smoke_run["results"] / "smoke" / "results.csv")
    for col in ("ci_low", "ci_high", "ci_method", "p_vs_best", "tied_with_best", "rank_low", "rank_high", "clean_ci_low", "clean_tied_with_best"):
        assert col in df.columns, col
    for _, r in df.iterrows():  # one seed: Wilson over the n examples, in %
        lo, hi = wilson(round(r["robust_acc"] * r["n"]), r["n"])
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((100 * lo, 100 * hi))
        assert r["ci_method"] == "wilson" and r["ci_low"] <= 100 * r["robust_acc"] <= r["ci_high"]
    for _, col in df.groupby("attack"):
        best = col[col["robust_acc"] == col["robust_acc"].max()]
        assert best["tied_with_best"].all() and best["p_vs_best"].isna().sum() >= 1
        assert (col["tied_with_best"] == (col["rank_low"] == 1)).all()  # bold iff the rank range starts at 1
        assert not col[col["p_vs_best"] < 0.05]["tied_with_best"].any()  # significantly behind the best: never bold
    board = (smoke_run["results"] / "smoke" / "leaderboard.md").read_text()
    assert "Wilson score interval" in board and "differences below 3.00 pp can never be significant" in board


def test_smoke_suite_raises_no_sanity_flag_but_a_weakened_pgd_is_flagged(smoke_run, tmp_path: Path) -> None:
    df = pd.read_csv(smoke_run["results"] / "smoke" / "results.csv")
    assert df["flags"].isna().all() and not df["flag_pgd_weaker_than_fgsm"].any()
    assert "Sanity flags" not in (smoke_run["results"] / "smoke" / "leaderboard.md").read_text()
    cache = tmp_path / "cache"
    shutil.copytree(smoke_run["cache"], cache)
    weak = smoke_without_analysis().replace("  - pgd: {steps: 10}\n", "  - pgd: {steps: 1, alpha: 0.0001}\n")
    suite = write_suite(tmp_path / "smoke.yaml", weak)
    assert run_cli("run", str(suite), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--quiet") == 0
    weak_df = pd.read_csv(tmp_path / "r" / "smoke" / "results.csv")
    flagged = set(weak_df[weak_df["flag_pgd_weaker_than_fgsm"]]["display_name"])
    assert {"standard", "standard+wa", "pgd_at"} <= flagged  # the rows where FGSM fools anything
    assert "an iterative attack is weaker than FGSM" in (tmp_path / "r" / "smoke" / "leaderboard.md").read_text()


def test_compare_prints_the_paired_table_and_rejects_unknown_rows(smoke_run, capsys: pytest.CaptureFixture) -> None:
    cache = ["--cache-dir", str(smoke_run["cache"])]
    assert run_cli("compare", str(SUITES / "smoke.yaml"), "pgd_at", "standard", "--column", "FGSM", *cache) == 0
    out = capsys.readouterr().out
    df = pd.read_csv(smoke_run["results"] / "smoke" / "results.csv")
    acc = {r["display_name"]: r["robust_acc"] for _, r in df[df["attack"] == "FGSM"].iterrows()}
    assert f"pgd_at {100 * acc['pgd_at']:.2f} %, standard {100 * acc['standard']:.2f} %" in out
    assert "exact McNemar test:" in out and "95 % interval" in out and "pgd_at right" in out
    assert run_cli("compare", str(SUITES / "smoke.yaml"), "pgd_at", "standrd", *cache) == 2
    assert "did you mean 'standard'" in capsys.readouterr().err


def test_training_curves_mark_the_selected_checkpoint(smoke_run) -> None:
    out = smoke_run["results"] / "smoke"
    df = pd.read_csv(out / "training_curves.csv")
    assert set(df["row"]) == {"standard", "standard+wa", "pgd_at", "pgd_at+wa"}
    assert (out / "training_curves.png").stat().st_size > 10_000
    results = pd.read_csv(out / "results.csv")
    for row, curve in df.groupby("row"):
        assert curve["selected"].sum() == 1
        best_epoch = results[results["display_name"] == row]["best_epoch"].iloc[0]
        assert curve[curve["selected"]]["epoch"].item() == best_epoch
    assert df[df["row"] == "pgd_at"]["val_robust"].notna().all() and df[df["row"] == "standard"]["val_robust"].isna().all()
    assert len(df[df["row"] == "pgd_at"]) == 4  # every epoch of the raw run


def test_training_figure_is_labelled() -> None:
    records = [{"row": r, "seed": 0, "epoch": e, "val_clean": 90.0 - e, "val_robust": 50.0 + e, "selected": e == 1}
               for r in ("a", "b") for e in range(3)]  # fmt: skip
    fig = training_figure(records, "title", 3)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["a", "b"] and fig.get_suptitle() == "title"
    assert all(ax.get_xlabel() == "epoch" and "accuracy" in ax.get_ylabel() for ax in axes)
    labels = [line.get_label() for line in axes[0].get_lines()]
    assert labels == ["clean (seed 0)", "robust (seed 0)", "selected (epoch 1)"]
    assert list(axes[0].get_lines()[2].get_ydata()) == [51.0]  # the star sits on the robust curve


def test_eval_eps_curve_without_retraining_is_monotone(smoke_run, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(smoke_run["cache"], cache)
    text = smoke_without_analysis().replace("eval: {n_examples: 200, batch_size: 200}", "eval: {n_examples: 200, batch_size: 200, eps: [8/255, 16/255, 48/255]}")
    suite = write_suite(tmp_path / "smoke.yaml", text)
    assert run_cli("run", str(suite), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--quiet") == 0
    summary = json.loads((tmp_path / "r" / "smoke" / "run.json").read_text())
    assert summary["trained"] == 0 and summary["cached_eval"] == 8 and summary["evaluated"] == 3 * 4 * 2
    out = tmp_path / "r" / "smoke"
    assert (out / "leaderboard.md").read_text() == smoke_run["board_first"]  # the leaderboard stays at the suite's eps
    curve = pd.read_csv(out / "robustness_curve.csv")
    worst = curve[curve["column"] == "Worst case"]
    assert set(worst["eps"]) == {"8/255", "16/255", "24/255", "48/255"} and set(curve["column"]) == {"FGSM", "PGD-10", "Worst case"}
    for row, points in worst.groupby("row"):
        acc = points.sort_values("eps_value")["acc"].tolist()
        assert all(a >= b for a, b in zip(acc, acc[1:])), (row, acc)  # a fixed model only loses accuracy as eps grows
        assert acc[0] > acc[-1]
    assert ((worst["ci_low"] <= worst["acc"]) & (worst["acc"] <= worst["ci_high"])).all()
    assert (out / "robustness_curve.png").stat().st_size > 10_000


def test_l2_suite_trains_and_evaluates_end_to_end(tmp_path: Path) -> None:
    text = smoke_without_analysis().replace("threat: {norm: Linf, eps: 24/255}", "threat: {norm: L2, eps: 1}")
    text = text.replace("  - standard\n", "").replace("wa: [none, swa]", "wa: [none]").replace("epochs: 4", "epochs: 1")
    text = text.replace("milestones: [3]", "milestones: []")
    text = text.replace("  - pgd: {steps: 10}\n", "  - pgd: {steps: 10}\n  - autoattack: {version: custom, attacks: [apgd-ce], n_iter: 10}\n")
    suite = write_suite(tmp_path / "l2.yaml", text)
    args = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--device", "cpu", "--quiet"]
    assert run_cli("run", str(suite), *args) == 0
    df = pd.read_csv(tmp_path / "r" / "smoke" / "results.csv")
    assert set(df["p_threat_norm"]) == {"L2"}
    attacks = df[df["attack"] != "Worst case"]
    assert (attacks["max_perturbation"] <= 1 + 1e-5).all() and (attacks["max_perturbation"] > 8 / 255).any()
    assert "Threat: L2, ε = 1" in (tmp_path / "r" / "smoke" / "leaderboard.md").read_text()


def test_report_rerenders_from_cache_only(smoke_run, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    assert run_cli("report", str(SUITES / "smoke.yaml"), "--cache-dir", str(smoke_run["cache"]), "--results-dir", str(out)) == 0
    assert (out / "smoke" / "leaderboard.md").read_text() == smoke_run["board_first"]


def test_adding_an_attack_on_a_nested_subset_only_evaluates_the_new_one(smoke_run, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(smoke_run["cache"], cache)
    new = "  - pgd: {steps: 10}\n  - pgd: {steps: 2, n_examples: 50}\n"
    suite = write_suite(tmp_path / "smoke.yaml", (SUITES / "smoke.yaml").read_text().replace("  - pgd: {steps: 10}\n", new))
    assert run_cli("run", str(suite), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--quiet") == 0
    summary = json.loads((tmp_path / "r" / "smoke" / "run.json").read_text())
    assert summary["trained"] == 0 and summary["evaluated"] == 4 and summary["cached_eval"] == 8
    df = pd.read_csv(tmp_path / "r" / "smoke" / "results.csv")
    assert set(df[df["attack"] == "PGD-2"]["n"]) == {50} and set(df[df["attack"] == "Worst case"]["n"]) == {50}
    assert set(df["clean_n"]) == {200}
    board = (tmp_path / "r" / "smoke" / "leaderboard.md").read_text()
    assert "PGD-2: first 50 of them" in board


def test_adding_an_averager_reruns_training_once_and_keeps_the_raw_run(smoke_run, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(smoke_run["cache"], cache)
    text = smoke_without_analysis().replace("wa: [none, swa]", "wa: [none, swa, {kind: ema, decay: 0.9}]")
    text = text.replace("  - standard\n", "")
    suite = write_suite(tmp_path / "smoke.yaml", text)
    assert run_cli("run", str(suite), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--quiet") == 0
    summary = json.loads((tmp_path / "r" / "smoke" / "run.json").read_text())
    assert summary["trained"] == 1 and summary["evaluated"] == 2 and summary["cached_eval"] == 4
    board = (tmp_path / "r" / "smoke" / "leaderboard.md").read_text()
    assert "| pgd_at+swa " in board and "| pgd_at+ema " in board


def test_dry_run_computes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    assert run_cli("run", str(SUITES / "smoke.yaml"), "--dry-run", "--cache-dir", str(cache)) == 0
    out = capsys.readouterr().out
    assert "2 train jobs (0 cached), 8 eval jobs (0 cached)" in out
    assert not cache.exists()


def test_training_failure_is_reported_and_not_cached(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plugin = write_suite(
        tmp_path / "nan_defence.py",
        '''
from dataclasses import dataclass
import torch
from bench.registry import DEFENCES
from bench.types import LossOut

@dataclass(frozen=True)
class P:
    pass

@DEFENCES.register("nan_for_test", params=P, version=1)
def nan_for_test(model, x, y, p, ctx):
    """Always NaN (tests)."""
    return LossOut(model(x).sum() * float("nan"))
''',
    )
    text = smoke_without_analysis().replace("  - standard\n", "  - nan_for_test\n") + f"plugins: [{plugin.name}]\n"
    suite = write_suite(tmp_path / "s.yaml", text)
    code = run_cli("run", str(suite), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--quiet")
    assert code == 1
    assert "diverged" in capsys.readouterr().err
    summary = json.loads((tmp_path / "r" / "smoke" / "run.json").read_text())
    assert summary["failed"] == 1 and summary["trained"] == 1
    assert len(list((tmp_path / "c" / "train").iterdir())) == 1  # only pgd_at's run is cached
    board = (tmp_path / "r" / "smoke" / "leaderboard.md").read_text()
    assert "| nan_for_test " in board and "—" in board
    from bench.registry import DEFENCES

    DEFENCES.unregister("nan_for_test")


def test_tiny_suite_on_fake_cifar10_files_runs_end_to_end_with_resnet18(tmp_path: Path) -> None:
    from tests.test_vision_data import fake_cifar10

    (tmp_path / "data").mkdir()
    fake_cifar10(tmp_path / "data", per_batch=8, n_test=8)
    suite = write_suite(
        tmp_path / "c.yaml",
        """\
name: fake-cifar
dataset: cifar10
model: resnet18
threat: {norm: Linf, eps: 8/255}
train: {epochs: 1, batch_size: 16, augmentation: {crop_padding: 4, flip: true}, val_fraction: 0.2}
defences: [{pgd_at: {steps: 1}}]
wa: [none, {kind: swa, start: 0}]
attacks: [fgsm]
""",
    )
    args = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path / "data")]
    assert run_cli("run", str(suite), *args, "--quiet") == 0
    summary = json.loads((tmp_path / "r" / "fake-cifar" / "run.json").read_text())
    assert summary["trained"] == 1 and summary["evaluated"] == 2 and summary["failed"] == 0
    assert "| pgd_at+wa " in (tmp_path / "r" / "fake-cifar" / "leaderboard.md").read_text()


def test_missing_dataset_at_run_time_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path / "none")]
    assert run_cli("validate", str(SUITES / "cifar10.yaml"), "--cache-dir", str(tmp_path / "c")) == 0  # no data needed
    capsys.readouterr()
    assert run_cli("run", str(SUITES / "cifar10.yaml"), *args, "--quiet") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset 'cifar10' not found" in err and "bench data fetch cifar10" in err
    assert not (tmp_path / "r").exists()


def test_zoo_rows_are_evaluated_without_training(smoke_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake ``robustbench.utils`` stands in for the optional extra (no network here)."""
    import sys
    import types

    import torch

    import bench
    from bench.models import zoo

    loaded: list[str] = []

    def load_model(model_name: str, model_dir: str, dataset: str, threat_model: str) -> torch.nn.Module:
        loaded.append(model_name)
        torch.manual_seed(0)
        return bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12))

    fake = types.ModuleType("robustbench.utils")
    fake.load_model = load_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "robustbench", types.ModuleType("robustbench"))
    monkeypatch.setitem(sys.modules, "robustbench.utils", fake)
    monkeypatch.setitem(zoo.DATASETS, "synthetic", "synthetic")
    monkeypatch.setitem(zoo.KNOWN_LINF, "synthetic", ("Fake2024",))  # validated like a real row
    cache = tmp_path / "cache"
    shutil.copytree(smoke_run["cache"], cache)
    suite = write_suite(tmp_path / "s.yaml", (SUITES / "smoke.yaml").read_text() + "zoo: [robustbench:Fake2024]\n")
    assert run_cli("run", str(suite), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--quiet") == 0
    summary = json.loads((tmp_path / "r" / "smoke" / "run.json").read_text())
    assert summary["trained"] == 0 and summary["evaluated"] == 2 and summary["cached_eval"] == 8
    assert loaded == ["Fake2024"]  # loaded once, reused for both attacks and the sanity checks
    assert "| robustbench:Fake2024 " in (tmp_path / "r" / "smoke" / "leaderboard.md").read_text()


def test_zoo_row_without_the_extra_fails_alone_with_one_clear_line(
    smoke_run, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from bench.models import zoo

    monkeypatch.setitem(sys.modules, "robustbench", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    monkeypatch.setitem(zoo.DATASETS, "synthetic", "synthetic")
    monkeypatch.setitem(zoo.KNOWN_LINF, "synthetic", ("Fake2024",))  # validated like a real row
    cache = tmp_path / "cache"
    shutil.copytree(smoke_run["cache"], cache)
    suite = write_suite(tmp_path / "s.yaml", (SUITES / "smoke.yaml").read_text() + "zoo: [robustbench:Fake2024]\n")
    assert run_cli("run", str(suite), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--quiet") == 1
    err = capsys.readouterr().err
    assert "optional `zoo` extra" in err
    board = (tmp_path / "r" / "smoke" / "leaderboard.md").read_text()
    assert "| pgd_at " in board and "| robustbench:Fake2024 " in board  # the other rows are intact


def test_analysis_writes_figures_tables_and_index(smoke_run) -> None:
    out = smoke_run["results"] / "smoke" / "analysis"
    assert smoke_run["first"]["analyzed"] == 2 and smoke_run["second"]["analyzed"] == 0
    for name in ["heatmap", "amplitude_diff", "radial_profiles", "perturbation_spectrum_PGD-10", "perturbation_spectrum_FGSM"]:
        for ext in (".png", ".pdf"):  # one figure per quantity, every analysed row in it
            assert (out / f"{name}{ext}").stat().st_size > 1000, name + ext
    index = (out / "README.md").read_text()
    assert "| standard " in index and "| pgd_at+wa " in index and "energy below r=4: PGD-10" in index and "nan" not in index
    table = pd.read_csv(out / "filtered_accuracy.csv")
    assert set(table["model"]) == {"standard", "pgd_at+wa"} and set(table["pass"]) == {"low", "high"}
    full = table[(table["pass"] == "low") & (table["mask"] == "b=12")]  # the full band: plain accuracy
    assert (full["clean_acc"] >= full["adv_acc"]).all()


def test_analyze_command_runs_only_analyses(smoke_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(smoke_run["cache"], cache)
    text = (SUITES / "smoke.yaml").read_text().replace("n_images: 64", "n_images: 32")
    suite = write_suite(tmp_path / "smoke.yaml", text)
    assert run_cli("analyze", str(suite), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--quiet") == 0
    summary = json.loads((tmp_path / "r" / "smoke" / "run.json").read_text())
    assert summary["analyzed"] == 2 and summary["trained"] == 0 and summary["evaluated"] == 0
    assert "# Spectral analysis" in capsys.readouterr().out
