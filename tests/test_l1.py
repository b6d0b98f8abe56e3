"""The L1 threat model: the exact L1-ball-and-box projection, the sparse PGD step, AutoAttack's L1
version through the reference code, the eps-ball check, and defences crafting in L1."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bench
from bench.attacks import check_adversarial
from bench.attacks.autoattack import AutoAttackParams, configured
from bench.attacks.l1 import l1_norms, project_l1_box, random_start, sparse_direction
from bench.core.errors import BenchError, EvaluationError
from bench.data.loader import to_unit
from bench.registry import ATTACKS, DEFENCES
from bench.types import ThreatModel, TrainContext
from defenses._common import pgd_adversary
from tests import test_attacks
from tests.test_attacks import TEST_PARAMS, predict
from tests.test_threats import suite_with

EPS_L1 = 2.0  # 12x12 grey images (144 pixels)


@pytest.fixture(scope="module")
def splits():
    return test_attacks.data.__wrapped__()  # the attack tests' seeded synthetic data


@pytest.fixture(scope="module")
def model(splits):
    return test_attacks.trained.__wrapped__(splits)  # and their briefly trained tiny_cnn, in eval mode


@pytest.fixture
def batch(splits):
    return to_unit(splits.test_x), splits.test_y


def l1(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).abs().sum(1)


# ------------------------------------------------------------------------------ the projection


def solver_projection(z: np.ndarray, x0: np.ndarray, eps: float) -> np.ndarray:
    """The same projection by a general convex solver (SLSQP with the split delta = p - m, p, m >= 0)."""
    from scipy.optimize import minimize

    n = len(z)
    d = z - x0

    def objective(v):
        return float(((v[:n] - v[n:] - d) ** 2).sum())

    def jac(v):
        r = 2 * (v[:n] - v[n:] - d)
        return np.concatenate([r, -r])

    cons = [{"type": "ineq", "fun": lambda v: eps - v.sum(), "jac": lambda v: -np.ones(2 * n)}]
    bounds = [(0, 1 - x) for x in x0] + [(0, x) for x in x0]
    start = np.zeros(2 * n)
    res = minimize(objective, start, jac=jac, bounds=bounds, constraints=cons, method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return x0 + res.x[:n] - res.x[n:]


@pytest.mark.parametrize("seed", range(8))
def test_projection_matches_a_convex_solver(seed):
    g = torch.Generator().manual_seed(seed)
    n = 6
    x0 = torch.rand(1, n, generator=g, dtype=torch.float64)
    z = x0 + 1.5 * torch.randn(1, n, generator=g, dtype=torch.float64)
    eps = float(torch.rand(1, generator=g)) * 1.5 + 0.05
    ours = project_l1_box(z, x0, eps)[0].numpy()
    ref = solver_projection(z[0].numpy(), x0[0].numpy(), eps)
    assert np.abs(ours - ref).max() < 1e-5
    assert np.abs(ours - x0[0].numpy()).sum() <= eps + 1e-9


def test_projection_with_ties_and_pixels_on_the_box():
    x0 = torch.tensor([[0.0, 1.0, 0.5, 0.5, 0.0, 1.0, 0.25, 0.75]], dtype=torch.float64)
    z = x0 + torch.tensor([[-0.3, 0.4, 0.3, -0.3, 0.3, -0.3, 0.3, 0.3]], dtype=torch.float64)  # ties, no room at 0/1
    for eps in (0.05, 0.3, 0.9, 1.5, 3.0):
        ours = project_l1_box(z, x0, eps)[0].numpy()
        ref = solver_projection(z[0].numpy(), x0[0].numpy(), eps)
        assert np.abs(ours - ref).max() < 1e-5, eps


def test_projection_defining_properties():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 3, 4, 4, generator=g, dtype=torch.float64)
    z = x0 + 0.8 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    eps = 2.0
    p = project_l1_box(z, x0, eps)
    assert (l1(p - x0) <= eps + 1e-9).all() and p.min() >= 0 and p.max() <= 1  # feasible
    assert torch.allclose(project_l1_box(p, x0, eps), p, atol=1e-12)  # idempotent
    far = l1(z.clamp(0, 1) - x0) > eps
    assert far.any() and torch.allclose(l1(p - x0)[far], torch.full((int(far.sum()),), eps, dtype=p.dtype))  # on the sphere
    # optimality: <z - P(z), c - P(z)> <= 0 for every feasible c (here: random feasible points)
    for _ in range(20):
        c = project_l1_box(x0 + torch.randn(x0.shape, generator=g, dtype=torch.float64), x0, eps)
        inner = ((z - p) * (c - p)).flatten(1).sum(1)
        assert (inner <= 1e-9).all()
    inside = x0 + 0.001 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    inside = inside.clamp(0, 1)
    assert torch.allclose(project_l1_box(inside, x0, eps), inside, atol=1e-12)  # a feasible point stays


def test_projection_keeps_float32_points_in_the_ball():
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(64, 3, 32, 32, generator=g)
    p = project_l1_box(x0 + torch.randn(x0.shape, generator=g), x0, 12.0)
    assert float(l1(p.double() - x0.double()).max()) <= 12.0 * (1 + 1e-6)


def test_sparse_direction_is_a_unit_l1_step_on_the_largest_movable_coordinates():
    grad = torch.tensor([[0.1, -5.0, 3.0, 0.2, 4.0, -0.3, 0.0, 2.0, 1.0, -1.0]])
    e = sparse_direction(grad, top=0.3)
    assert torch.equal(e, torch.tensor([[0, -1, 1, 0, 1, 0, 0, 0, 0, 0]]) / 3)
    x = torch.tensor([[0.5, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])  # the two largest cannot move
    e = sparse_direction(grad, x, top=0.3)
    assert torch.equal(e, torch.tensor([[0, 0, 0, 0, 1, 0, 0, 1, 1, 0]]) / 3)
    assert float(e.abs().sum()) == pytest.approx(1.0)


def test_random_start_is_inside_the_l1_ball():
    torch.manual_seed(0)
    x0 = torch.rand(32, 1, 12, 12)
    s = random_start(x0, EPS_L1)
    assert (l1_norms(s - x0) <= EPS_L1 * (1 + 1e-5)).all() and float(l1_norms(s - x0).max()) > 0.1
    assert s.min() >= 0 and s.max() <= 1


# ------------------------------------------------------------------------------ attacks


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_stays_in_the_l1_ball(name, model, batch):
    x, y = batch
    if name == "square":  # the reference Square-L1 init cannot tile 12x12 images either
        with pytest.raises(BenchError, match="Square L1 .* cannot run on 12x12 images"):
            bench.attack(name, model, x, y, eps=EPS_L1, norm="L1", **TEST_PARAMS[name])
        x = F.interpolate(x, size=(15, 15), mode="bilinear")
    torch.manual_seed(0)
    x_adv = bench.attack(name, model, x, y, eps=EPS_L1, norm="L1", **TEST_PARAMS[name])
    assert float(l1(x_adv - x).max()) <= EPS_L1 * (1 + 1e-5)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (predict(model, x_adv) == y).float().mean() <= (predict(model, x) == y).float().mean()


def test_pgd_l1_uses_its_budget_sparsely_and_fools(model, batch):
    x, y = batch
    torch.manual_seed(0)
    x_adv = bench.attack("pgd", model, x, y, eps=EPS_L1, norm="L1", steps=20)
    clean = predict(model, x) == y
    assert int((predict(model, x_adv) == y).sum()) < int(clean.sum())
    assert float(l1(x_adv - x).max()) > 0.9 * EPS_L1
    # far beyond the L-inf budget per pixel, far under it in L2 / L-inf sense on average: sparse
    assert float((x_adv - x).abs().amax()) > 0.25
    assert float(((x_adv - x).abs() > 1e-6).float().mean()) < 0.8


def test_l1_pgd_is_as_strong_as_the_reference_apgd_l1(model, batch):
    x, y = batch
    torch.manual_seed(0)
    ours = predict(model, bench.attack("pgd", model, x, y, eps=EPS_L1, norm="L1", steps=20)) == y
    ref = predict(model, bench.attack("apgd-ce", model, x, y, eps=EPS_L1, norm="L1", n_iter=20)) == y
    assert int(ours.sum()) <= int(ref.sum()) + 2  # within two examples of the reference L1-APGD


def test_autoattack_standard_l1_is_the_reference_l1_configuration(model):
    aa = configured(model, AutoAttackParams(), 12.0, "cpu", 10, "L1")
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert (aa.apgd.use_largereps, aa.apgd.n_restarts, aa.apgd_targeted.n_target_classes) == (True, 5, 5)
    assert (aa.norm, aa.apgd.norm, aa.fab.norm, aa.square.norm) == ("L1",) * 4
    custom = configured(model, AutoAttackParams("custom", ("apgd-ce",), n_iter=20), 12.0, "cpu", 10, "L1")
    assert custom.apgd.use_largereps and custom.apgd.n_iter == 20
    linf = configured(model, AutoAttackParams("custom", ("apgd-ce",), n_iter=20), 8 / 255, "cpu", 10, "Linf")
    assert not linf.apgd.use_largereps


def test_check_adversarial_measures_l1():
    x = torch.full((2, 1, 12, 12), 0.5)
    spread = x + 0.01  # L-inf 0.01, L1 1.44
    assert check_adversarial("a", x, spread, 1.5, norm="L1") == pytest.approx(1.44, abs=1e-5)
    with pytest.raises(EvaluationError, match="L1 distance 1.44"):
        check_adversarial("a", x, spread, 1.0, norm="L1")
    assert check_adversarial("a", x, spread, 0.02) == pytest.approx(0.01, abs=1e-6)  # L-inf unchanged


# ------------------------------------------------------------------------------ threat and defences


def test_l1_threat_is_accepted(tmp_path: Path):
    suite = suite_with(tmp_path, "{norm: L1, eps: 12}")
    assert (suite.threat.norm, suite.threat.eps, suite.threat.eps_text) == ("L1", Fraction(12), "12")


def l1_ctx() -> TrainContext:
    return TrainContext(epoch=0, step=0, epochs=1, milestones=(), threat=ThreatModel("L1", Fraction(2), "2"), num_classes=4)


def test_defences_craft_in_the_suites_l1_ball(model, batch):
    x, y = batch
    torch.manual_seed(0)
    x_adv = pgd_adversary(model, x, y, l1_ctx(), steps=5, alpha=None)
    assert float(l1(x_adv - x).max()) <= 2 * (1 + 1e-5) and float((x_adv - x).abs().max()) > 8 / 255


@pytest.mark.parametrize("name", DEFENCES.names())
def test_every_defence_trains_a_step_in_l1(name, splits):
    torch.manual_seed(0)
    net = bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12)).train()
    x, y = to_unit(splits.train_x[:16]), splits.train_y[:16]
    entry = DEFENCES.get(name)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    out = entry.fn(net, x, y, entry.default_params(), l1_ctx())
    assert torch.isfinite(out.loss)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    if out.after_step is not None:
        out.after_step()
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
