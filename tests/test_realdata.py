"""Real data: a Fashion-MNIST slice. PGD-AT must be far more robust under PGD than standard training.

Calibrated once on this CPU (2,000 training images, 2 epochs, PGD-3 training, 300 test images):
standard reached about 75 % clean / under 20 % PGD-10 and PGD-AT about 70 % clean / 50 % PGD-10
at eps = 0.1. The thresholds below leave wide margins.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import bench
from bench.data import data_roots, load_dataset
from bench.data.fashion_mnist import FashionMNISTParams
from tests.conftest import write_suite

SUITE = """\
name: fmnist-slice
dataset: fashion-mnist
model: small_cnn
threat: {norm: Linf, eps: 0.1}
train:
  epochs: 2
  batch_size: 64
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5e-4}
  schedule: {milestones: [1]}
  subset: 2000
  val_examples: 200
  selection: last
defences: [standard, {pgd_at: {steps: 3, alpha: 0.04}}]
attacks: [{pgd: {steps: 10, alpha: 0.02}}]
eval: {n_examples: 300, batch_size: 150}
"""


def test_official_files_load_and_verify(fmnist: None) -> None:
    splits = load_dataset("fashion-mnist", FashionMNISTParams(verify=True))
    assert splits.train_x.shape == (60000, 1, 28, 28) and splits.test_x.shape == (10000, 1, 28, 28)
    assert sorted(splits.train_y.unique().tolist()) == list(range(10))
    assert any(str(splits.source).startswith(str(r)) for r in data_roots())


@pytest.mark.slow
def test_pgd_at_is_far_more_robust_than_standard(fmnist: None, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", SUITE)
    summary = bench.run_suite(suite, cache_dir=tmp_path / "c", results_dir=tmp_path / "r", device="cpu", progress=False)
    assert summary.failures == [] and summary.trained == 2
    df = pd.read_csv(tmp_path / "r" / "fmnist-slice" / "results.csv")
    pgd = df[df["attack"] == "PGD-10"].set_index("defence")
    assert pgd.loc["standard", "clean_acc"] > 0.6 and pgd.loc["pgd_at", "clean_acc"] > 0.55
    assert 0 < pgd.loc["pgd_at", "robust_acc"] < pgd.loc["pgd_at", "clean_acc"]
    assert pgd.loc["pgd_at", "robust_acc"] > pgd.loc["standard", "robust_acc"] + 0.2


@pytest.mark.slow
def test_the_threats_suite_runs_with_its_own_attack_script(fmnist: None, tmp_path: Path) -> None:
    """suites/threats/fashion-mnist.yaml as its README section runs it (bench run, the script, bench run), on a
    slice: L1 training and attacks, a corruption column and the per-row external files of adaptive_attack.py."""
    import json
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT, SUITES

    for name in ("fashion-mnist.yaml", "adaptive_attack.py"):
        shutil.copy(SUITES / "threats" / name, tmp_path / name)
    sets = ["train.subset=2000", "train.epochs=2", "train.val_examples=64", "eval.n_examples=100",
            'attacks=[{pgd: {steps: 5}}, {external: {path: "adaptive/{row}-seed{seed}.pt", name: adaptive}}, {corruption: {name: contrast, severity: [1, 5]}}]']  # fmt: skip
    run = ["run", str(tmp_path / "fashion-mnist.yaml"), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"),
           "--device", "cpu", "--quiet", *(x for s in sets for x in ("--set", s))]  # fmt: skip
    from bench.commands.cli import main

    assert main(run) == 0
    out = tmp_path / "r" / "threats-fashion-mnist"
    assert "External column `adaptive`: no file yet for 2 row(s)" in (out / "leaderboard.md").read_text()
    script = [sys.executable, str(tmp_path / "adaptive_attack.py"), "--cache-dir", str(tmp_path / "c"), *(x for s in sets for x in ("--set", s))]
    done = subprocess.run(script, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "adaptive").iterdir()) == ["pgd_at-seed0.pt", "standard-seed0.pt"]
    assert main(run) == 0
    records = json.loads((out / "results.json").read_text())
    acc = {(r["display_name"], r["attack"]): r["robust_acc"] for r in records}
    for row in ("standard", "pgd_at"):
        assert acc[(row, "Worst case")] <= min(acc[(row, "PGD-5")], acc[(row, "adaptive")])
        assert acc[(row, "contrast s5")] < acc[(row, "contrast s1")] - 0.1, acc  # 15 % of the contrast against 75 %
    assert "no file yet" not in (out / "leaderboard.md").read_text() and (out / "corruptions.md").is_file()
