"""Defence contract tests (every registered defence), golden losses, and FR / SAR specifics.

Contract (parametrised over ``DEFENCES.names()``, so a new defence is covered automatically): a
finite scalar loss that requires grad, detached scalar logs, non-zero parameter gradients, every
module's train/eval mode restored, deterministic under ``torch.manual_seed``, and no parameter,
gradient or optimiser state touched by the call itself.

Golden values: ``tests/golden/defences.json`` stores one loss per registered defence (default
params, ``tiny_cnn`` seeded with 0, the batch of :func:`make_batch`, call seed 2, epoch 2 with
milestones (1,) so FR's term is on). A defence without an entry fails. After an intended change
(bump the defence's ``version`` too), regenerate the file with

    BENCH_UPDATE_GOLDEN=1 /tmp/venv/bin/pytest -q tests/test_defences.py -k golden
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from torch import nn

import bench
from bench.core.errors import ConfigError
from bench.core.params import build as build_params
from bench.registry import DEFENCES
from bench.types import ThreatModel, TrainContext
from defenses.fr import FRParams, frequency_regularizer
from defenses.mart import MARTParams
from defenses.pgd_at import PGDATParams
from defenses.sar import SARParams, l1_gain
from defenses.trades import OFFICIAL, TRADESParams

NAMES = DEFENCES.names()
GOLDEN = Path(__file__).parent / "golden" / "defences.json"
UPDATE_GOLDEN = os.environ.get("BENCH_UPDATE_GOLDEN") == "1"


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12))


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 12, 12, generator=g), torch.arange(16) % 4


def make_ctx(epoch: int = 2) -> TrainContext:
    threat = ThreatModel(eps=Fraction(8, 255))
    return TrainContext(epoch=epoch, step=0, epochs=3, milestones=(1,), threat=threat, num_classes=4)


def call(name: str, model: nn.Module, params=None, ctx: TrainContext | None = None, seed: int = 2):
    entry = DEFENCES.get(name)
    x, y = make_batch()
    torch.manual_seed(seed)
    return entry.fn(model, x, y, entry.default_params() if params is None else params, ctx or make_ctx())


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


# ---------------------------------------------------------------- contract, every registered defence


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_scalar_with_grad_and_gradients_flow(name):
    model = make_model().train()
    out = call(name, model)
    assert out.loss.ndim == 0 and out.loss.requires_grad and torch.isfinite(out.loss)
    for key, value in out.logs.items():
        assert isinstance(value, torch.Tensor) and value.ndim == 0 and not value.requires_grad, key
        assert torch.isfinite(value), key
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert float(model.net[-1].weight.grad.abs().sum()) > 0  # the linear head


@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
@pytest.mark.parametrize("name", NAMES)
def test_module_modes_restored(name, start):
    model = make_model().train(start != "eval")
    if start == "mixed":
        model.net[1].eval()  # a frozen BatchNorm inside a training model
    before = modes(model)
    call(name, model)
    assert modes(model) == before


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name):
    a = call(name, make_model().train()).loss
    b = call(name, make_model().train()).loss
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_and_parameters_untouched(name):
    model = make_model().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = make_batch()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # populate the momentum buffers
    opt.zero_grad(set_to_none=True)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    out = call(name, model)
    if out.after_step is not None:  # AWP: weights are perturbed until the loop's post-step hook
        out.after_step()
        assert all(torch.allclose(p, q, rtol=1e-6, atol=1e-7) for p, q in zip(model.parameters(), params))
    else:
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert all(p.grad is None for p in model.parameters()), "the defence called backward"
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    assert after["state"].keys() == state["state"].keys()
    for k, s in state["state"].items():
        assert all(torch.equal(after["state"][k][f], v) for f, v in s.items() if isinstance(v, torch.Tensor))


# ---------------------------------------------------------------- golden values


def _read_golden() -> dict[str, float]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.parametrize("name", NAMES)
def test_golden_loss(name):
    value = call(name, make_model().train()).loss.item()
    stored = _read_golden()
    if UPDATE_GOLDEN:
        stored = {k: v for k, v in stored.items() if k in NAMES} | {name: value}
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(dict(sorted(stored.items())), indent=2) + "\n")
        return
    assert name in stored, f"no golden loss for defence {name!r}: regenerate with BENCH_UPDATE_GOLDEN=1"
    assert value == pytest.approx(stored[name], rel=1e-4)


def test_golden_has_no_stale_entries():
    assert set(_read_golden()) <= set(NAMES)


# ---------------------------------------------------------------- FR: the transform


def dft(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the DFT matrix exp(-2 pi i j k / n), float64."""
    k = torch.arange(n, dtype=torch.float64)
    angle = -2 * math.pi * torch.outer(k, k) / n
    return torch.cos(angle), torch.sin(angle)


def old_rfft2(z: torch.Tensor) -> torch.Tensor:
    """``torch.rfft(z, signal_ndim=2, normalized=False, onesided=False)`` for a B x C z: B x C x 2."""
    z = z.double()
    cb, sb = dft(z.shape[0])
    cc, sc = dft(z.shape[1])
    re = cb @ z @ cc - sb @ z @ sc  # (Cb + i Sb) z (Cc + i Sc)
    im = cb @ z @ sc + sb @ z @ cc
    return torch.stack([re, im], -1)


def closed_form(delta: torch.Tensor) -> float:
    """methods.md 3.4.2: (1 / 2BC) sum_{u,v} |Re D[u,v]| + |Im D[u,v]|, D the 2-D DFT of delta."""
    b_n, c_n = delta.shape
    d = delta.double().tolist()
    total = 0.0
    for u in range(b_n):
        for v in range(c_n):
            re = im = 0.0
            for b in range(b_n):
                for c in range(c_n):
                    phase = -2 * math.pi * (u * b / b_n + v * c / c_n)
                    re += d[b][c] * math.cos(phase)
                    im += d[b][c] * math.sin(phase)
            total += abs(re) + abs(im)
    return total / (2 * b_n * c_n)


@pytest.mark.parametrize("shape", [(16, 4), (7, 3), (8, 10)])
def test_fr_regularizer_matches_original_rfft_l1(shape):
    g = torch.Generator().manual_seed(3)
    z_adv = torch.randn(shape, generator=g, dtype=torch.float64)
    z_nat = torch.randn(shape, generator=g, dtype=torch.float64)
    reference = nn.L1Loss()(old_rfft2(z_adv), old_rfft2(z_nat))
    assert float(frequency_regularizer(z_adv, z_nat)) == pytest.approx(float(reference), rel=1e-6)
    assert float(frequency_regularizer(z_adv, z_nat)) == pytest.approx(closed_form(z_adv - z_nat), rel=1e-6)
    # float32 logits (what a model gives) agree to float32 rounding
    assert float(frequency_regularizer(z_adv.float(), z_nat.float())) == pytest.approx(float(reference), rel=1e-5)


def test_fr_per_sample_is_class_dft_and_differs_from_batch2d():
    g = torch.Generator().manual_seed(4)
    z_adv, z_nat = torch.randn(2, 16, 4, generator=g, dtype=torch.float64)
    cc, sc = dft(4)
    delta = z_adv - z_nat
    per_sample = torch.stack([delta @ cc, delta @ sc], -1).abs().mean()
    value = frequency_regularizer(z_adv, z_nat, "per_sample")
    assert float(value) == pytest.approx(float(per_sample), rel=1e-6)
    assert not math.isclose(float(value), float(frequency_regularizer(z_adv, z_nat, "batch2d")), rel_tol=1e-2)


def test_fr_regularizer_gradient_reaches_both_inputs():
    z_adv = torch.randn(8, 4, requires_grad=True)
    z_nat = torch.randn(8, 4, requires_grad=True)
    frequency_regularizer(z_adv, z_nat).backward()
    assert z_adv.grad.abs().sum() > 0 and z_nat.grad.abs().sum() > 0


# ---------------------------------------------------------------- FR / SAR: start epoch and loss


SHARING = [n for n in NAMES if DEFENCES.get(n).shared_start]


def _sharing_params(name: str) -> list:
    """Each defence declaring a shared start, with its default params and with the start at the first milestone."""
    default = DEFENCES.get(name).default_params()
    return [default, *([dataclasses.replace(default, start_epoch="first_milestone")] if hasattr(default, "start_epoch") else [])]


@pytest.mark.parametrize("name", SHARING)
def test_a_shared_start_is_the_named_defence_bit_for_bit(name):
    """The claim behind a ``prefix`` task: before its start the defence's step is the named defence's
    step with the same params: loss, every gradient, BN statistics and the RNG draws are identical,
    and its logs are the named defence's plus the declared ones."""
    ctx0 = make_ctx(epoch=0)
    declared = [DEFENCES.get(name).shared_start(p, ctx0.first_milestone) for p in _sharing_params(name)]
    assert any(d is not None for d in declared), f"{name}: no params give a shared start; test one that does"
    for params, start in zip(_sharing_params(name), declared):
        if start is None:
            continue
        for epoch in range(start.epochs):
            ctx = make_ctx(epoch=epoch)
            mine, theirs = make_model().train(), make_model().train()
            out = call(name, mine, params, ctx)
            out.loss.backward()
            rng = torch.get_rng_state()
            ref = call(start.name, theirs, start.params, ctx)
            ref.loss.backward()
            assert torch.equal(torch.get_rng_state(), rng)
            assert torch.equal(out.loss, ref.loss)
            assert all(torch.equal(a.grad, b.grad) for a, b in zip(mine.parameters(), theirs.parameters()))
            assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
            logs = {k: float(v) for k, v in out.logs.items()}
            assert logs == {**{k: float(v) for k, v in ref.logs.items()}, **start.logs}
        after = call(name, make_model().train(), params, make_ctx(epoch=start.epochs))
        assert not torch.equal(after.loss, call(start.name, make_model().train(), start.params, make_ctx(epoch=start.epochs)).loss)


def test_fr_and_sar_share_their_start_with_pgd_at_only_before_a_positive_start_epoch():
    share = DEFENCES.get("fr").shared_start
    start = share(FRParams(steps=5, alpha=0.025), 75)
    assert (start.name, start.params, start.epochs, start.logs) == ("pgd_at", PGDATParams(5, 0.025, "eval"), 75, {"fr": 0.0, "fr_active": 0.0})
    assert share(FRParams(start_epoch=0), 75) is None and share(FRParams(start_epoch=3), 75).epochs == 3
    assert DEFENCES.get("sar").shared_start(SARParams(), 75) is None  # on from epoch 0
    assert DEFENCES.get("sar").shared_start(SARParams(start_epoch=4), 75).logs == {"sar": 0.0, "sar_active": 0.0}


@pytest.mark.parametrize(
    ("name", "params", "epoch"),
    [
        ("fr", FRParams(), 1),  # epoch == first milestone: on
        ("fr", FRParams(start_epoch=0), 0),
        ("sar", SARParams(), 0),
    ],
)
def test_spectral_term_adds_lam_times_regulariser(name, params, epoch):
    out = call(name, make_model().train(), params, make_ctx(epoch))
    at = call("pgd_at", make_model().train(), ctx=make_ctx(epoch))
    assert float(out.logs[f"{name}_active"]) == 1 and float(out.logs[name]) > 0
    assert out.loss.item() == pytest.approx(at.loss.item() + params.lam * float(out.logs[name]), rel=1e-6)


def test_sar_defaults_and_lambda_derivation():
    p = SARParams()
    assert (p.fft, p.start_epoch) == ("per_sample", 0)
    fr_lam = FRParams().lam
    ratio = l1_gain((128, 10)) / l1_gain((10,))
    assert p.lam == round(fr_lam * ratio, 2) == 1.2
    assert math.sqrt(128) < ratio < 1.07 * math.sqrt(128)  # sqrt(B) to leading order
    # Monte Carlo with i.i.d. Gaussian logit gaps, B = 128, C = 10 (fft2 / fft act on the last dims)
    delta = torch.randn(200, 128, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    zero = torch.zeros_like(delta)
    m = float(delta.abs().mean())
    batch2d = float(frequency_regularizer(delta, zero, "batch2d"))
    per_sample = float(frequency_regularizer(delta, zero, "per_sample"))
    assert batch2d / m == pytest.approx(l1_gain((128, 10)), rel=0.01)
    assert per_sample / m == pytest.approx(l1_gain((10,)), rel=0.01)
    assert batch2d / per_sample == pytest.approx(ratio, rel=0.01)


# ---------------------------------------------------------------- TRADES / MART / params


def test_trades_with_beta_zero_is_clean_ce():
    trades = call("trades", make_model().train(), TRADESParams(beta=0.0))
    standard = call("standard", make_model().train())
    assert torch.equal(trades.loss, standard.loss)


def test_trades_official_preset():
    assert (OFFICIAL.alpha, OFFICIAL.beta, OFFICIAL.steps, OFFICIAL.attack_bn) == (0.007, 6.0, 10, "eval")


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (TRADESParams, "beta", -1),
        (TRADESParams, "steps", 0),
        (MARTParams, "alpha", 0),
        (FRParams, "lam", -0.1),
        (FRParams, "start_epoch", -1),
        (SARParams, "fft", "per_sample1d"),
    ],
)
def test_params_validation(cls, field, value):
    with pytest.raises(ConfigError, match=field):
        build_params(cls, {field: value}, "defence")


def test_fr_start_epoch_accepts_int_and_first_milestone():
    assert build_params(FRParams, {"start_epoch": 0}, "fr").start_epoch == 0
    assert build_params(SARParams, {"start_epoch": "first_milestone"}, "sar").start_epoch == "first_milestone"


def test_awp_perturbs_each_weight_by_gamma_times_its_norm_and_restores():
    from defenses.awp import AWPParams, weight_perturbation

    model = make_model().train()
    x, y = make_batch()
    delta = weight_perturbation(model, x, y, gamma=0.01)
    weights = {n: p for n, p in model.named_parameters() if p.ndim > 1}
    assert set(delta) == set(weights)  # conv and linear weights only, no BN or biases
    for name, v in delta.items():
        assert float(v.norm()) == pytest.approx(0.01 * float(weights[name].detach().norm()), rel=1e-5)
    before = [p.detach().clone() for p in model.parameters()]
    out = call("awp", model, AWPParams(gamma=0.01))
    perturbed = [p.detach().clone() for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, perturbed))  # active during the loss
    out.after_step()
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(before, model.parameters()))
    no_awp = call("awp", make_model().train(), AWPParams(gamma=0.0)).loss
    at_train_bn = call("pgd_at", make_model().train(), PGDATParams(attack_bn="train")).loss
    assert torch.equal(no_awp, at_train_bn)


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for n, b in model.named_buffers() if "running" in n]


@pytest.mark.parametrize("gamma", [0.01, 0.0])
def test_awp_reference_clean_forward_updates_batchnorm_after_the_restore(gamma):
    from defenses.awp import AWPParams

    x, y = make_batch()
    ref = make_model().train()
    out = call("awp", ref, AWPParams(gamma=gamma, clean_forward=False))
    if out.after_step is not None:
        out.after_step()
    without = _bn_stats(ref)  # only the adversarial forwards moved the statistics
    with torch.no_grad():
        ref(x)  # what the reference does next: a train-mode forward on the clean batch
    expected = _bn_stats(ref)
    assert any(not torch.equal(a, b) for a, b in zip(without, expected))

    model = make_model().train()
    out = call("awp", model, AWPParams(gamma=gamma))
    model.eval()  # the hook runs the clean forward in train mode whatever mode it finds, and restores it
    out.after_step()
    assert not model.training
    assert all(torch.allclose(a, b) for a, b in zip(_bn_stats(model), expected))
    assert all(p.grad is None for p in model.parameters())
