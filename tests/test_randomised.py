"""Randomised and probability-output models: detection, honest evaluation with EoT, flags, unchanged cost and keys."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bench
from bench.attacks.autoattack import AutoAttackParams
from bench.attacks.pgd import ce_loss, direction, eot_gradient, pgd, project, random_init
from bench.core.errors import ConfigError
from bench.core.modes import frozen_eval
from bench.data import load_dataset
from bench.data.loader import to_unit
from bench.data.synthetic import SyntheticParams
from bench.engine.store import Store
from bench.evaluation import evaluate as evaluate_mod
from bench.evaluation import randomised
from bench.evaluation.evaluate import robust_flags
from bench.models.tiny import TinyCNNParams, tiny_cnn
from bench.registry import MODELS
from bench.report.aggregate import _align
from tests.test_own_model import model  # noqa: F401  (fixture)

EPS = 24 / 255
EVAL = {"dataset": "synthetic", "eps": "24/255", "batch_size": 64, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", SyntheticParams())


@pytest.fixture(scope="module")
def net(model: nn.Module) -> nn.Module:  # noqa: F811  (the imported fixture, by name)
    """test_own_model's tiny_cnn, trained for 60 steps on the synthetic stripes: right on most examples."""
    return model


class PixelDrop(nn.Module):
    """A randomised defence: each forward pass zeroes every input pixel with probability 1/2 (rescaling the rest)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * (torch.rand_like(x) > 0.5) * 2)


class Softmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(1)


class Counting(nn.Module):
    """Counts its forward passes and the rows they saw."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls, self.rows = net, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls, self.rows = self.calls + 1, self.rows + len(x)
        return self.net(x)


def legacy_pgd(m, x0, y, eps, alpha, steps):
    """The PGD loop as it was before ``eot`` existed (one restart, CE, uniform start)."""
    x = random_init(x0.detach(), eps, "uniform")
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(ce_loss(m(x), y).sum(), x)
        x = project(x.detach() + alpha * direction(grad), x0, eps)
    return x.detach()


def legacy_flags(m, x, y, attack, batch_size):
    """robust_flags as it was before the model check: one clean pass, the attack, one final pass."""
    clean_parts, robust_parts = [], []
    with frozen_eval(m):
        for i in range(0, len(x), batch_size):
            xb, yb = to_unit(x[i : i + batch_size]), y[i : i + batch_size]
            with torch.no_grad():
                clean = m(xb).argmax(1) == yb
            robust = clean.clone()
            if clean.any():
                x_adv = attack(m, xb[clean], yb[clean])
                with torch.no_grad():
                    robust[clean] = m(x_adv).argmax(1) == yb[clean]
            clean_parts.append(clean)
            robust_parts.append(robust)
    return torch.cat(clean_parts).numpy(), torch.cat(robust_parts).numpy()


def test_a_deterministic_model_costs_one_extra_forward_pass_and_its_flags_are_unchanged(net, data) -> None:
    x, y = data.test_x[:100], data.test_y[:100]
    attack = lambda m, xb, yb: pgd(m, xb, yb, EPS, EPS / 4, 5)  # noqa: E731
    old = lambda m, xb, yb: legacy_pgd(m, xb, yb, EPS, EPS / 4, 5)  # noqa: E731
    counted = Counting(net)
    torch.manual_seed(7)
    flags = robust_flags(counted, x, y, attack, EPS, 32, "pgd")
    calls, rows, after = counted.calls, counted.rows, torch.get_rng_state()
    counted.calls = counted.rows = 0
    torch.manual_seed(7)
    clean, robust = legacy_flags(counted, x, y, old, 32)
    assert (calls - counted.calls, rows - counted.rows) == (1, 32)  # one extra pass of the first batch, nothing else
    assert np.array_equal(flags.clean, clean) and np.array_equal(flags.robust, robust)
    assert torch.equal(torch.get_rng_state(), after)  # the check drew nothing from the attack's stream
    assert 0 < robust.sum() < clean.sum()  # a model worth attacking
    assert flags.model_check == {"randomised": False, "probabilities": False}


def test_eot_1_is_bit_identical_and_more_passes_lower_the_gradient_variance(net, data) -> None:
    x, y = to_unit(data.test_x[:64]), data.test_y[:64]
    with frozen_eval(net):
        torch.manual_seed(3)
        new = pgd(net, x, y, EPS, EPS / 4, 5, eot=1)
        torch.manual_seed(3)
        assert torch.equal(new, legacy_pgd(net, x, y, EPS, EPS / 4, 5))
    noisy = PixelDrop(net)
    with frozen_eval(noisy):
        torch.manual_seed(0)
        reference = eot_gradient(noisy, x, y, ce_loss, 64).flatten(1)
        cosine = {n: F.cosine_similarity(eot_gradient(noisy, x, y, ce_loss, n).flatten(1), reference).mean().item() for n in (1, 16)}
    assert cosine[16] > cosine[1] + 0.15, cosine  # measured: 0.44 with one pass, 0.75 with 16 (against 512)


def test_a_randomised_model_is_evaluated_over_draws_with_eot_and_flagged(net, tmp_path: Path) -> None:
    noisy = PixelDrop(net)
    attacks = ["fgsm", {"pgd": {"steps": 10}}, {"pgd": {"steps": 10, "eot": 10}}]
    kw = {**EVAL, "sanity": False}  # all 256 test examples
    result = bench.evaluate(noisy, attacks=attacks, cache_dir=tmp_path / "a", **kw)
    assert list(result.flags.columns) == ["Clean", "FGSM", "PGD-10", "PGD-10·EoT10", "Worst case"]
    tidy = result.tidy.iloc[0]
    assert tidy["flag_randomised"] and tidy["flag_no_eot"] and not tidy["flag_probabilities"]
    assert tidy["flag_clean_draws_differ"] == 0  # the same batches: the same clean verdicts in every evaluation
    text = "; ".join(result.warnings)
    assert "randomised model: outputs differ between two forward passes" in text and "majority of 15 seeded draws" in text
    assert "PGD-10·EoT10 (10 passes)" in text and "attacked without EoT by FGSM, PGD-10:" in text
    flags = result.flags
    for column in ("FGSM", "PGD-10", "PGD-10·EoT10"):
        assert not (flags[column] & ~flags["Clean"]).any()
    plain, eot = flags["PGD-10"], flags["PGD-10·EoT10"]
    only_eot_breaks, only_plain_breaks = int((plain & ~eot).sum()), int((eot & ~plain).sum())
    one_sided_p = sum(math.comb(n, k) for k in range(only_eot_breaks, n + 1)) / 2**n if (n := only_eot_breaks + only_plain_breaks) else 1.0
    assert plain.mean() - eot.mean() > 0.05 and one_sided_p < 0.01, (plain.mean(), eot.mean(), only_eot_breaks, only_plain_breaks)
    store = Store(tmp_path / "a")
    checks = [store.read_json("eval", key, "metrics.json")["model_check"] for key in result.rows["eval_key"].dropna()]
    assert checks == [{"randomised": True, "probabilities": False, "draws": randomised.DRAWS}] * 3


def test_a_softmax_model_is_named_and_a_plain_model_is_not(net, tmp_path: Path) -> None:
    soft = bench.evaluate(Softmax(net), attacks=["fgsm"], n_examples=64, cache_dir=tmp_path, **EVAL)
    row = soft.tidy.iloc[0]
    assert row["flag_probabilities"] and not row["flag_randomised"]
    assert any(w.startswith("model outputs probabilities (rows sum to 1), not logits") for w in soft.warnings)
    plain = bench.evaluate(net, attacks=["fgsm"], n_examples=64, cache_dir=tmp_path, **EVAL)
    row = plain.tidy.iloc[0]
    assert not row["flag_probabilities"] and not row["flag_randomised"] and not plain.warnings


def test_a_resumed_randomised_evaluation_gives_the_flags_of_an_uninterrupted_one(net, data, tmp_path, monkeypatch) -> None:
    noisy, x, y = PixelDrop(net), data.test_x[:96], data.test_y[:96]
    attack = lambda m, xb, yb: pgd(m, xb, yb, EPS, EPS / 4, 3, eot=2)  # noqa: E731
    torch.manual_seed(5)
    whole = robust_flags(noisy, x, y, attack, EPS, 32, "pgd")

    def killed(name: str) -> None:
        if name == "eval-batch:2":
            raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_mod, "EVAL_SAVE_S", 0.0)
    monkeypatch.setattr(evaluate_mod, "fault_point", killed)
    state = tmp_path / "progress.npz"
    torch.manual_seed(5)
    with pytest.raises(KeyboardInterrupt):
        robust_flags(noisy, x, y, attack, EPS, 32, "pgd", state=state)
    torch.manual_seed(5)
    resumed = robust_flags(noisy, x, y, attack, EPS, 32, "pgd", state=state)
    assert np.array_equal(whole.clean, resumed.clean) and np.array_equal(whole.robust, resumed.robust)
    assert resumed.model_check == whole.model_check == {"randomised": True, "probabilities": False, "draws": randomised.DRAWS}


def test_clean_verdicts_that_differ_stop_a_deterministic_run_only() -> None:
    ids = np.arange(4)
    results = [(ids, np.array([1, 1, 0, 1], bool), np.zeros(4, bool)), (ids[:2], np.array([1, 0], bool), np.zeros(2, bool))]
    with pytest.raises(RuntimeError, match="disagree on the clean predictions of 1 example"):
        _align(results, "m")
    got_ids, clean, differ = _align(results, "m", randomised=True)
    assert np.array_equal(got_ids, ids) and clean.tolist() == [1, 1, 0, 1] and differ == 1
    record = {"randomised": True, "probabilities": False, "draws": 15}
    flags = randomised.model_flags([("PGD-20", "pgd", bench.attacks.pgd.PGDParams(), record)], clean_differ=1)
    assert "differ between its evaluations on 1 example(s)" in flags["flags"]
    assert randomised.model_flags([("PGD-20", "pgd", bench.attacks.pgd.PGDParams(), None)]) == {"flags": ""}  # unchecked entries


def test_eot_of_autoattack_rand_counts_and_square_is_not_a_gradient_attack() -> None:
    record = {"randomised": True, "probabilities": False, "draws": 15}
    aa = randomised.model_flags([("AutoAttack-rand", "autoattack", AutoAttackParams(version="rand"), record)])
    assert not aa["flag_no_eot"] and "AutoAttack-rand (20 passes)" in aa["flags"]
    standard = randomised.model_flags([("AutoAttack", "autoattack", AutoAttackParams(), record), ("Square", "square", None, record)])
    assert standard["flag_no_eot"] and "attacked without EoT by AutoAttack:" in standard["flags"]


def test_detection_thresholds() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    assert not randomised.is_probabilities(logits) and randomised.is_probabilities(logits.softmax(1))
    assert not randomised.is_probabilities(logits.log_softmax(1))  # log-probabilities are logits for CE
    assert not randomised.differs(logits, logits + 1e-7) and randomised.differs(logits, logits + 0.1 * torch.randn(2, 3))


def test_eot_is_validated_and_left_out_of_the_keyed_form_at_its_default() -> None:
    from bench.core.params import build, to_plain

    for name in ("pgd", "fgsm", "cw"):
        cls = bench.registry.ATTACKS.get(name).params
        assert "eot" not in to_plain(build(cls, {"eot": 1}, name)) and to_plain(build(cls, {"eot": 4}, name))["eot"] == 4
        with pytest.raises(ConfigError, match=rf"^{name}\.eot: must be at least 1$"):
            build(cls, {"eot": 0}, name)


SUITE = """\
name: noisy
dataset: synthetic
model: tiny_cnn
threat: {norm: Linf, eps: 24/255}
defences: []
attacks: [fgsm, {pgd: {steps: 3, eot: 4}}]
eval: {n_examples: 64, batch_size: 32}
checkpoints:
  - {name: dropped, model: pixel_drop_tiny, path: dropped.pt}
  - {name: plain, model: tiny_cnn, path: plain.pt}
"""


@pytest.fixture
def pixel_drop_model():
    """A registered randomised model (PixelDrop around tiny_cnn), so that a suite's checkpoints row can name it."""
    MODELS.register("pixel_drop_tiny", params=TinyCNNParams, version=1)(lambda p, n, shape: PixelDrop(tiny_cnn(p, n, shape)))
    yield
    MODELS.unregister("pixel_drop_tiny")


def test_the_leaderboard_states_how_a_randomised_row_was_evaluated(net, tmp_path: Path, pixel_drop_model) -> None:
    dropped = bench.build_model("pixel_drop_tiny", num_classes=4, shape=(1, 12, 12))
    dropped.net.net.load_state_dict(net.net.state_dict())
    torch.save(dropped.state_dict(), tmp_path / "dropped.pt")
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    (tmp_path / "s.yaml").write_text(SUITE)
    summary = bench.run_suite(tmp_path / "s.yaml", cache_dir=tmp_path / "c", results_dir=tmp_path / "r", device="cpu", progress=False)
    assert not summary.failures
    board = (tmp_path / "r" / "noisy" / "leaderboard.md").read_text()
    assert f"- Randomised models (flagged below): each per-sample verdict, clean and under attack, is the majority of {randomised.DRAWS}" in board
    header = next(line for line in board.splitlines() if line.startswith("|") and "Defence" in line)
    assert [c.strip() for c in header.split("|")[3:6]] == ["Clean", "FGSM", "PGD-3·EoT4"]
    flagged = {line.split("`")[1]: line for line in board.splitlines() if line.startswith("- `")}
    assert "randomised model attacked without EoT by FGSM:" in flagged["dropped"] and "PGD-3·EoT4 (4 passes)" in flagged["dropped"]
    assert "randomised" not in flagged.get("plain", "")  # the deterministic row is not named
