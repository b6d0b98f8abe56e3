"""The training loop's pieces: schedules, weight averaging maths, BN recomputation."""

from __future__ import annotations

import copy

import pytest
import torch

import bench
from bench.suite.specs import ScheduleSpec, WASpec
from bench.training.averaging import Averager


def test_piecewise_schedule_is_set_at_epoch_start() -> None:
    s = ScheduleSpec("piecewise", (75, 90), 0.1)
    assert [s.lr(0.1, e, 100) for e in (0, 74, 75, 89, 90, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return bench.build_model("tiny_cnn", num_classes=3, shape=(1, 8, 8))


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    return m


def test_swa_is_the_arithmetic_mean_of_the_snapshots_from_start() -> None:
    base = _model()
    avg = Averager(WASpec(kind="swa", start=1, every=1, bn_recompute=False), base, (), 4, seed=0)
    snaps = [_perturbed(base, s) for s in range(4)]
    for epoch, snap in enumerate(snaps):
        avg.after_epoch(snap, epoch)
    assert avg.n == 3  # epochs 1, 2, 3
    for name, p in avg.model.named_parameters():
        expected = torch.stack([dict(s.named_parameters())[name] for s in snaps[1:]]).mean(0)
        assert torch.allclose(p, expected, atol=1e-6), name


def test_swa_every_k_epochs_and_of_identical_models_is_the_model() -> None:
    base = _model()
    avg = Averager(WASpec(kind="swa", start=0, every=2, bn_recompute=False), base, (), 5, seed=0)
    updated = [avg.after_epoch(base, e) and avg.n for e in range(5)]
    assert updated == [1, False, 2, False, 3]  # epochs 0, 2, 4
    for p, q in zip(avg.model.parameters(), base.parameters()):
        assert torch.allclose(p, q)


def test_first_milestone_start() -> None:
    avg = Averager(WASpec(kind="swa"), _model(), (3, 5), 6, seed=0)
    assert avg.start == 3


def test_ema_follows_the_decay() -> None:
    base = _model()
    avg = Averager(WASpec(kind="ema", start=0, decay=0.5), base, (), 2, seed=0)
    a, b = _perturbed(base, 1), _perturbed(base, 2)
    avg.after_step(a, 0)
    avg.after_step(b, 0)
    for p, pa, pb in zip(avg.model.parameters(), a.parameters(), b.parameters()):
        assert torch.allclose(p, 0.5 * pa + 0.5 * pb, atol=1e-6)


def _bn_inputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of every BN layer in a train-mode forward of ``x`` on a copy of ``model``."""
    ref = copy.deepcopy(model).train()
    seen: list[torch.Tensor] = []
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    with torch.no_grad():
        ref(x)
    return seen


def test_bn_recompute_equals_a_fresh_pass_over_the_clean_training_data() -> None:
    base = _model()
    avg = Averager(WASpec(kind="swa", start=0), base, (), 1, seed=0)
    avg.after_epoch(_perturbed(base, 3), 0)
    x = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    y = torch.zeros(50, dtype=torch.long)
    rng_before = torch.get_rng_state()
    avg.recompute_bn(x, y, batch_size=64, crop_padding=0, flip=False)  # one batch: statistics of all 50 images
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training trajectory is untouched
    bns = [m for m in avg.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn, feats in zip(bns, _bn_inputs(avg.model, x.float() / 255), strict=True):
        assert torch.allclose(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-5)
        assert torch.allclose(bn.running_var, feats.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
        assert bn.momentum == 0.1  # restored


def test_bn_recompute_mean_is_sample_weighted_across_uneven_batches() -> None:
    base = _model()
    avg = Averager(WASpec(kind="swa", start=0), base, (), 1, seed=0)
    avg.after_epoch(base, 0)
    x = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    avg.recompute_bn(x, torch.zeros(50, dtype=torch.long), batch_size=16, crop_padding=0, flip=False)  # 16+16+16+2
    first_bn = next(m for m in avg.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    expected = _bn_inputs(avg.model, x.float() / 255)[0].mean((0, 2, 3))  # first BN input: batch-independent
    assert torch.allclose(first_bn.running_mean, expected, atol=1e-5)


def test_per_epoch_logging_never_changes_the_training_trajectory(tmp_path, monkeypatch) -> None:
    """The logit-spectrum gap runs an attack every epoch; with its RNG forked the weights are identical."""
    from bench.core.progress import Progress
    from bench.data import load_dataset
    from bench.plan.expand import expand
    from bench.suite.load import load_suite
    from bench.training import train as train_mod
    from tests.conftest import SUITES

    suite = load_suite(SUITES / "smoke.yaml")
    job = expand(suite).train_jobs[1]  # pgd_at: random starts use the global RNG
    splits = load_dataset(suite.dataset.name, suite.dataset.params)
    data = train_mod.prepare_data(splits, suite, torch.device("cpu"))
    logged = train_mod.train_model(job, suite, splits, data, torch.device("cpu"), Progress(False))
    assert all("logit_gap" in r and r["logit_gap"] >= 0 for r in logged.log)
    monkeypatch.setattr(train_mod, "logit_gap", lambda *a, **k: 0.0)
    silent = train_mod.train_model(job, suite, splits, data, torch.device("cpu"), Progress(False))
    for k, v in logged.raw.states["last"].items():
        assert torch.equal(v, silent.raw.states["last"][k]), k
