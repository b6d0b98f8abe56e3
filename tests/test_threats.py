"""Threat models: L2 attacks and checks against an independent PGD-L2, L2 training, eval.eps parsing and planning."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bench
from bench.attacks import check_adversarial
from bench.core.errors import BenchError, ConfigError, EvaluationError
from bench.plan.expand import expand
from bench.registry import ATTACKS
from bench.suite.load import load_suite
from bench.types import ThreatModel, TrainContext
from defenses._common import pgd_adversary
from tests.conftest import MINIMAL_SUITE, write_suite
from tests.test_attacks import TEST_PARAMS, batch, data, model, predict, trained  # noqa: F401  (fixtures)

EPS_L2 = 1.0  # 12x12 grey images: about the L2 size of an L-inf ball of 1/12


def l2(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


def ref_pgd_l2(model, x, y, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """Minimal PGD-L2 written independently: normalised-gradient steps, rescale into the ball, clip."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        step = g / g.reshape(len(g), -1).norm(dim=1).reshape(-1, 1, 1, 1)
        delta = x_adv.detach() + alpha * step - x
        norms = delta.reshape(len(delta), -1).norm(dim=1).reshape(-1, 1, 1, 1)
        x_adv = (x + delta * torch.clamp(eps / norms, max=1.0)).clamp(0, 1)
    return x_adv.detach()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_stays_in_the_l2_ball(name, model, batch):
    x, y = batch
    if name == "square":  # the reference Square-L2 cannot tile 12x12 images: a one-line error; 15x15 works
        with pytest.raises(BenchError, match="Square L2 .* cannot run on 12x12 images"):
            bench.attack(name, model, x, y, eps=EPS_L2, norm="L2", **TEST_PARAMS[name])
        x = F.interpolate(x, size=(15, 15), mode="bilinear")
    torch.manual_seed(0)
    x_adv = bench.attack(name, model, x, y, eps=EPS_L2, norm="L2", **TEST_PARAMS[name])
    assert float(l2(x_adv - x).max()) <= EPS_L2 * (1 + 1e-5)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean = (predict(model, x) == y).float().mean()
    assert (predict(model, x_adv) == y).float().mean() <= clean


def test_pgd_l2_matches_an_independent_pgd_l2(model, batch):
    x, y = batch
    ours = bench.attack("pgd", model, x, y, eps=EPS_L2, norm="L2", steps=10, init="none")  # alpha = eps / 4
    ref = ref_pgd_l2(model, x, y, EPS_L2, EPS_L2 / 4, 10)
    assert (ours - ref).abs().max() < 1e-5
    assert float(l2(ours - x).max()) > 0.9 * EPS_L2  # it uses the L2 budget, far beyond the L-inf one
    assert float((ours - x).abs().max()) > 8 / 255


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("pgd", {"steps": 20}),
        ("apgd-ce", {"n_iter": 20}),
        ("autoattack", {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_iter": 20}),
    ],
)
def test_l2_attacks_are_no_weaker_than_an_independent_pgd_l2(name, params, model, batch):
    x, y = batch
    ref = predict(model, ref_pgd_l2(model, x, y, EPS_L2, EPS_L2 / 4, 20)) == y
    assert not ref.all() and ref.any()  # the comparison has something to compare
    torch.manual_seed(0)
    ours = predict(model, bench.attack(name, model, x, y, eps=EPS_L2, norm="L2", **params)) == y
    assert int(ours.sum()) <= int(ref.sum()) + 1  # one example of slack for random starts


def test_check_adversarial_measures_the_threats_norm():
    x = torch.full((2, 1, 12, 12), 0.5)
    spike = x.clone()
    spike[:, 0, 0, 0] += 0.4  # L-inf 0.4, L2 0.4
    spread = x + 0.1  # L-inf 0.1, L2 1.2
    assert check_adversarial("a", x, spike, 1.0, norm="L2") == pytest.approx(0.4, abs=1e-6)
    with pytest.raises(EvaluationError, match="L-inf distance"):
        check_adversarial("a", x, spike, 0.3)
    assert check_adversarial("a", x, spread, 0.3) == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(EvaluationError, match="L2 distance 1.2"):
        check_adversarial("a", x, spread, 1.0, norm="L2")


def test_defences_craft_in_the_suites_l2_ball(model, batch):
    x, y = batch
    threat = ThreatModel("L2", Fraction(1), "1")
    ctx = TrainContext(epoch=0, step=0, epochs=1, milestones=(), threat=threat, num_classes=4)
    torch.manual_seed(0)
    x_adv = pgd_adversary(model, x, y, ctx, steps=5, alpha=None)
    assert float(l2(x_adv - x).max()) <= 1 + 1e-5 and float((x_adv - x).abs().max()) > 8 / 255


# ------------------------------------------------------------------------------------ suites


def suite_with(tmp_path: Path, threat: str = "{norm: Linf, eps: 8/255}", extra: str = ""):
    text = MINIMAL_SUITE.replace("threat: {norm: Linf, eps: 8/255}", f"threat: {threat}") + extra
    return load_suite(write_suite(tmp_path / "s.yaml", text))


def test_l2_threat_is_accepted_with_radii_above_one(tmp_path: Path):
    suite = suite_with(tmp_path, "{norm: L2, eps: 3/2}")
    assert (suite.threat.norm, suite.threat.eps, suite.threat.eps_text) == ("L2", Fraction(3, 2), "3/2")


@pytest.mark.parametrize(
    ("threat", "extra", "message"),
    [
        ("{norm: L3, eps: 0.1}", "", "threat.norm: expected Linf, L2 or L1, got 'L3'"),
        ("{norm: L1, eps: 0}", "", "threat.eps: must be in (0, inf) for L1"),
        ("{norm: L2, eps: 0}", "", "threat.eps: must be in (0, inf) for L2"),
        ("{norm: Linf, eps: 8/255}", "eval: {eps: [4/255, 4/255]}\n", "eval.eps[1]: duplicate radius 4/255"),
        ("{norm: Linf, eps: 8/255}", "eval: {eps: 4/255}\n", "eval.eps: expected a non-empty list"),
        ("{norm: Linf, eps: 8/255}", "eval: {eps: [4/255, 2]}\n", "eval.eps[1]: must be in (0, 1] for Linf"),
    ],
)
def test_threat_and_eval_eps_errors_are_one_line(tmp_path: Path, threat: str, extra: str, message: str):
    with pytest.raises(ConfigError) as info:
        suite_with(tmp_path, threat, extra)
    assert message in str(info.value) and "\n" not in str(info.value) and "s.yaml: " in str(info.value)


def test_eval_eps_adds_keyed_jobs_and_leaves_the_leaderboard_jobs_alone(tmp_path: Path):
    base = expand(suite_with(tmp_path))
    plan = expand(suite_with(tmp_path, extra="eval: {eps: [4/255, 8/255, 16/255]}\n"))  # 8/255 is the suite's own
    main = [e for e in plan.eval_jobs if e.threat is None]
    assert [e.key for e in main] == [e.key for e in base.eval_jobs]  # cached evaluations stay valid
    extra = [e for e in plan.eval_jobs if e.threat is not None]
    assert [e.column for e in extra] == ["FGSM @ ε=4/255", "FGSM @ ε=16/255"]
    assert [e.attack_column for e in extra] == ["FGSM", "FGSM"] and plan.columns == base.columns
    assert len({e.key for e in plan.eval_jobs}) == 3
    assert {e.spec["threat"]["eps"] for e in extra} == {"4/255", "16/255"}
    assert all(e.weights == main[0].weights for e in extra)  # no retraining: the same weights


def test_robustness_figure_is_labelled_with_bands() -> None:
    from bench.report.figures import robustness_figure

    records = [
        {"row": row, "eps": text, "eps_value": float(Fraction(text)), "column": "Worst case", "acc": acc, "ci_low": acc - 5, "ci_high": acc + 5}
        for row, accs in (("a", (90, 60, 10)), ("b", (80, 70, 30)))
        for text, acc in zip(("4/255", "8/255", "16/255"), accs)
    ]  # fmt: skip
    fig = robustness_figure(records, "curve", ThreatModel("Linf", Fraction(8, 255), "8/255"))
    (ax,) = fig.axes
    assert ax.get_title() == "curve" and ax.get_xlabel().startswith("ε (L∞") and "accuracy" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4/255", "8/255", "16/255"]
    assert [h.get_label() for h in ax.get_legend().legend_handles] == ["training ε = 8/255", "a", "b"]
    assert len(ax.collections) == 2  # one interval band per row
    assert list(ax.get_lines()[1].get_ydata()) == [90, 60, 10]


def test_margin_loss_pgd_is_not_labelled_cw_under_l2(tmp_path: Path):
    from bench.attacks import label
    from bench.plan.expand import expand
    from bench.registry import ATTACKS

    attacks = "attacks: [cw, {pgd: {steps: 10, loss: cw}}, pgd, fgsm]\n"
    l2 = expand(load_suite(write_suite(tmp_path / "l2.yaml", MINIMAL_SUITE.replace("attacks: [fgsm]\n", attacks).replace("Linf, eps: 8/255", "L2, eps: 1"))))
    assert l2.columns == ["CW-loss PGD-L2-30", "CW-loss PGD-L2-10", "PGD-20", "FGSM"]
    assert l2.suite.threat.norm == "L2" and [j.column for j in l2.eval_jobs[:2]] == l2.columns[:2]
    linf = expand(load_suite(write_suite(tmp_path / "linf.yaml", MINIMAL_SUITE.replace("attacks: [fgsm]\n", attacks))))
    assert linf.columns == ["CW-30", "PGD-10", "PGD-20", "FGSM"]  # L-inf labels as before: committed tables keep their columns
    assert label("cw", ATTACKS.get("cw").default_params()) == "CW-30"  # the norm defaults to L-inf
    # a plug-in label taking only the params still works under L2
    assert label("square", ATTACKS.get("square").default_params(), "L2") == "Square"
