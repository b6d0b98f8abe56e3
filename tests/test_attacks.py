"""Attack plug-ins: the contract for every registered attack, agreement with independent minimal
implementations, PGD restarts, the AutoAttack adapter against pyautoattack itself, and the
evaluator's checks of what an attack returns."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

import bench
from bench.attacks import pgd as pgd_mod
from bench.attacks.autoattack import AutoAttackParams, configured
from bench.core.errors import ConfigError, EvaluationError
from bench.data.loader import to_unit
from bench.data.synthetic import SyntheticParams
from bench.evaluation.evaluate import robust_flags
from bench.registry import ATTACKS, DATASETS
from bench.types import DatasetSplits

EPS = 8 / 255

# Small budgets for the contract tests: every registered attack needs an entry here.
TEST_PARAMS: dict[str, dict] = {
    "none": {},
    "fgsm": {},
    "pgd": {"steps": 3},
    "cw": {"steps": 3},
    "autoattack": {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_iter": 5},
    "apgd-ce": {"n_iter": 5},
    "apgd-t": {"n_iter": 5},  # 9 target classes, capped at 3 on the 4-class model
    "square": {"n_queries": 20},
}


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    """Seeded synthetic 4-class 12x12 uint8 data; 32 test points."""
    return DATASETS.get("synthetic").fn(SyntheticParams(n_train=256, n_test=32, noise=0.3), [])


@pytest.fixture(scope="module")
def trained(data) -> torch.nn.Module:
    """tiny_cnn after 8 Adam steps: ~70 % clean accuracy, small margins, so attacks at 8/255 bite."""
    torch.manual_seed(0)
    model = bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        idx = torch.randint(0, len(data.train_x), (64,), generator=g)
        loss = F.cross_entropy(model(to_unit(data.train_x[idx])), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture
def model(trained) -> torch.nn.Module:
    trained.eval()
    return trained


@pytest.fixture
def batch(data) -> tuple[torch.Tensor, torch.Tensor]:
    return to_unit(data.test_x), data.test_y


def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


# ---------------------------------------------------------------------------------------------
# Contract of every registered attack


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_contract(name, training, model, batch):
    assert name in TEST_PARAMS, f"attack {name!r} is registered but has no small test params in TEST_PARAMS"
    x, y = batch
    model.train(training)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    torch.manual_seed(0)
    x_adv = bench.attack(name, model, x, y, eps="8/255", **TEST_PARAMS[name])
    assert model.training == training and all(m.training == training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN stats untouched
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    model.eval()
    clean = (predict(model, x) == y).float().mean()
    adv = (predict(model, x_adv) == y).float().mean()
    assert 0.5 <= clean < 1  # the fixture leaves both correct and misclassified points
    if name == "none":
        assert adv == clean
    else:
        assert adv < clean, f"{name} fooled nothing"


def test_labels():
    label = bench.attacks.label
    assert label("cw", ATTACKS.get("cw").default_params()) == "CW-30"
    assert label("autoattack", AutoAttackParams()) == "AutoAttack"
    assert label("autoattack", AutoAttackParams("rand")) == "AutoAttack-rand"
    assert label("autoattack", AutoAttackParams("custom", ("square",))) == "Square"
    quick = AutoAttackParams("custom", ("apgd-ce", "apgd-t"), n_iter=50, n_target_classes=2)
    assert label("autoattack", quick) == "APGD-CE+T·50it·2tgt"  # the quickstart's reduced cascade
    every = AutoAttackParams("custom", ("apgd-ce", "apgd-t", "fab-t", "square"), n_restarts=2, n_queries=100)
    assert label("autoattack", every) == "APGD-CE+T+FAB-T+Square·2rs·100q"
    assert label("autoattack", AutoAttackParams("custom", ("square",), n_iter=10)) == "Square"  # budget not used by Square
    assert label("apgd-ce", ATTACKS.get("apgd-ce").params(n_iter=50)) == "APGD-CE·50it"
    assert [label(n, ATTACKS.get(n).default_params()) for n in ("apgd-ce", "apgd-t", "square")] == [
        "APGD-CE", "APGD-T", "Square",
    ]


# ---------------------------------------------------------------------------------------------
# PGD, FGSM, CW against independent minimal implementations


def ref_pgd(model, x, y, eps, alpha, steps, loss, random_start):
    """Madry et al. / FR ``attack/pgd.py`` style loop, batch-mean loss."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1) if random_start else x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def ref_cw_loss(logits, y):
    """FR ``attack/cw.py``: the other logit is the largest, or the second largest when y is largest."""
    top = logits.sort(1, descending=True)
    other = torch.where(top.indices[:, 0] == y, top.values[:, 1], top.values[:, 0])
    return -(logits.gather(1, y[:, None]).squeeze(1) - other).mean()


@pytest.mark.parametrize(
    "name, params, alpha, steps, loss, random_start",
    [
        ("pgd", {"steps": 5}, EPS / 4, 5, F.cross_entropy, True),
        ("pgd", {"steps": 4, "init": "none", "alpha": 0.01}, 0.01, 4, F.cross_entropy, False),
        ("fgsm", {}, EPS, 1, F.cross_entropy, False),
        ("cw", {"steps": 5}, EPS / 4, 5, ref_cw_loss, True),
    ],
)
def test_matches_minimal_reference(name, params, alpha, steps, loss, random_start, model, batch):
    x, y = batch
    torch.manual_seed(123)
    ours = bench.attack(name, model, x, y, eps="8/255", **params)
    torch.manual_seed(123)
    ref = ref_pgd(model, x, y, EPS, alpha, steps, loss, random_start)
    assert torch.equal(predict(model, ours), predict(model, ref))
    assert (ours - ref).abs().max() < 1e-5


# ---------------------------------------------------------------------------------------------
# PGD restarts keep the per-sample worst


def test_pgd_restarts_keep_per_sample_worst(model, batch, monkeypatch):
    x, y = batch
    torch.manual_seed(0)
    x_fool = bench.attack("pgd", model, x, y, eps="8/255", steps=10)
    starts = {"fool": x_fool, "clean": x}

    def run(*order):
        queue = [starts[k] for k in order]
        monkeypatch.setattr(pgd_mod, "random_init", lambda x0, eps, init, norm: queue.pop(0).clone())
        out = bench.attack("pgd", model, x, y, eps="8/255", steps=1, alpha=1e-4, restarts=len(order))
        assert not queue
        return predict(model, out) != y

    from_fool, from_clean = run("fool"), run("clean")
    assert (from_fool & ~from_clean).any()  # the case under test exists
    expected = from_fool | from_clean
    assert torch.equal(run("fool", "clean"), expected)  # a later unsuccessful restart does not undo
    assert torch.equal(run("clean", "fool"), expected)


def test_pgd_more_restarts_never_worse(model, batch):
    x, y = batch
    torch.manual_seed(7)
    one = bench.attack("pgd", model, x, y, eps="8/255", steps=2, restarts=1)
    torch.manual_seed(7)  # restart 1 of 3 draws the same uniform start as the single run
    three = bench.attack("pgd", model, x, y, eps="8/255", steps=2, restarts=3)
    fooled_one, fooled_three = predict(model, one) != y, predict(model, three) != y
    assert not (fooled_one & ~fooled_three).any()


# ---------------------------------------------------------------------------------------------
# AutoAttack adapter


def test_autoattack_matches_pyautoattack(model, batch):
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    x, y = batch
    clean = predict(model, x) == y
    x, y = x[clean], y[clean]  # as the evaluator calls attacks
    x_adv = bench.attack(
        "autoattack", model, x, y, eps="8/255", version="custom", attacks=["apgd-ce", "apgd-t"], n_iter=5,
        n_target_classes=3, seed=3,
    )
    ours = predict(model, x_adv) == y

    aa = AutoAttack(model, attacks=["apgd-ce", "apgd-t"], device="cpu", eps=EPS, norm="Linf", seed=3, version="custom")
    common = dict(n_iter=5, n_restarts=1, eps=EPS, norm="Linf", seed=3, device="cpu", eot_iter=1, rho=0.75)
    aa.apgd = APGDAttack(model, logger=aa.logger, **common)
    aa.apgd_targeted = APGDAttack_targeted(model, n_target_classes=3, logger=aa.logger, **common)
    with torch.random.fork_rng(devices=[]):
        _, y_adv = aa.run_standard_evaluation(x, y, batch_size=500)
    theirs = y_adv == y
    assert torch.equal(ours, theirs)
    assert not ours.all()


def test_autoattack_standard_configuration(model):
    aa = configured(model, AutoAttackParams(), EPS, "cpu")
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert (aa.version, aa.norm, aa.epsilon, aa.seed, aa.device) == ("standard", "Linf", EPS, 0, "cpu")
    assert (aa.apgd.n_restarts, aa.apgd.n_iter, aa.apgd.thr_decr, aa.apgd.eot_iter) == (1, 100, 0.75, 1)
    assert (aa.apgd_targeted.n_target_classes, aa.apgd_targeted.n_restarts, aa.apgd_targeted.n_iter) == (9, 1, 100)
    assert (aa.fab.n_target_classes, aa.fab.n_restarts, aa.fab.n_iter) == (9, 1, 100)
    assert (aa.square.n_queries, aa.square.n_restarts, aa.square.p_init) == (5000, 1, 0.8)
    assert all(a.seed == 0 and a.eps == EPS for a in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square))
    # capping for small models only; a no-op at 10 classes
    assert configured(model, AutoAttackParams(), EPS, "cpu", num_classes=10).fab.n_target_classes == 9
    capped = configured(model, AutoAttackParams(), EPS, "cpu", num_classes=4)
    assert (capped.apgd_targeted.n_target_classes, capped.fab.n_target_classes) == (3, 3)


def test_autoattack_custom_budgets(model):
    from pyautoattack.autopgd_base import APGDAttack

    p = AutoAttackParams("custom", ("apgd-ce", "square"), n_iter=10, n_restarts=2, n_target_classes=4, n_queries=7)
    aa = configured(model, p, EPS, "cpu")
    assert aa.attacks_to_run == ["apgd-ce", "square"]
    ref = APGDAttack(model, n_iter=10, eps=EPS)  # iterations and step-size checkpoints as constructed
    for attack in (aa.apgd, aa.apgd_targeted):
        assert all(getattr(attack, k) == getattr(ref, k) for k in ("n_iter", "n_iter_orig", "n_iter_2", "n_iter_min"))
        assert attack.size_decr == ref.size_decr and attack.n_restarts == 2
    assert (aa.apgd_targeted.n_target_classes, aa.fab.n_target_classes, aa.square.n_queries) == (4, 4, 7)


def test_autoattack_all_four_on_four_classes(model, batch):
    """fab-t and apgd-t with the default 9 targets crash the reference code on 4 classes unless capped."""
    x, y = batch
    x_adv = bench.attack(
        "autoattack", model, x, y, eps="8/255", version="custom", attacks=["apgd-ce", "apgd-t", "fab-t", "square"],
        n_iter=2, n_queries=5,
    )
    assert (predict(model, x_adv) == y).float().mean() < (predict(model, x) == y).float().mean()


@pytest.mark.parametrize(
    "params, field",
    [
        ({"n_iter": 5}, "n_iter"),
        ({"attacks": ["square"]}, "attacks"),
        ({"version": "custom"}, "attacks"),
        ({"version": "custom", "attacks": ["apgd-ce", "apgd-ce"]}, "attacks"),
        ({"version": "custom", "attacks": ["fab"]}, "attacks[0]"),
        ({"version": "custom", "attacks": ["square"], "n_queries": 0}, "n_queries"),
    ],
)
def test_autoattack_params_validation(params, field, model, batch):
    x, y = batch
    with pytest.raises(ConfigError) as info:
        bench.attack("autoattack", model, x, y, eps="8/255", **params)
    assert info.value.where == f"attack autoattack.{field}"


# ---------------------------------------------------------------------------------------------
# The evaluator rejects invalid attack output


def _leave_ball(m, x, y):
    return (x + 2 * EPS).clamp(0, 1)


def _leave_box(m, x, y):
    return x + EPS / 2


def _train_mode(m, x, y):
    m.train()
    return x.clone()


@pytest.mark.parametrize(
    "fake, message",
    [(_leave_ball, "left the eps-ball"), (_leave_box, r"left \[0,1\]"), (_train_mode, "changed the model's mode")],
)
def test_evaluator_rejects_invalid_attacks(fake, message, model, data):
    x = data.test_x.clone()
    x[:, :, 0, 0] = 255  # some pixels at 1.0, so +eps/2 leaves [0,1]
    y = predict(model, to_unit(x))
    with pytest.raises(EvaluationError, match=rf"attack 'fake_{fake.__name__}'.*{message}"):
        robust_flags(model, x, y, fake, float(Fraction(8, 255)), 16, f"fake_{fake.__name__}")
    assert not model.training
