"""Sanity flags: a deliberately gradient-masked model is flagged; an honest one is not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import bench
from bench.evaluation.sanity import run_flags, sanity_checks


class Quantised(nn.Module):
    """Non-differentiable input quantisation in front of a model: every input gradient is zero."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 4) / 4)


def _data() -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    splits = bench.DATASETS.get("synthetic").fn(bench.DATASETS.get("synthetic").params(), [])
    torch.manual_seed(0)
    model = bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = splits.train_x.float() / 255
    for _ in range(3):
        for i in range(0, 512, 32):
            loss = nn.functional.cross_entropy(model(x[i : i + 32]), splits.train_y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return splits.test_x[:128], splits.test_y[:128], model.eval()


def test_masked_model_is_flagged_and_honest_model_is_not() -> None:
    x, y, model = _data()
    honest = run_flags(sanity_checks(model, x, y, 64), [])
    assert not honest["flag_zero_grad"] and not honest["flag_large_eps"] and honest["flags"] == ""
    masked = run_flags(sanity_checks(Quantised(model), x, y, 64), [])
    assert masked["flag_zero_grad"] and masked["flag_zero_grad_frac"] > 0.9
    assert masked["flag_large_eps"]  # gradient attacks cannot move it even at eps = 0.5
    assert "zero input gradients" in masked["flags"]


def attack_row(family: str, robust: np.ndarray) -> dict:
    return {"family": family, "sample_id": np.arange(len(robust)), "robust": robust, "robust_acc": robust.mean()}


def robust_first(k: int, n: int = 200) -> np.ndarray:
    return np.arange(n) < k


def binomial_p(b: int, c: int) -> float:
    return min(1.0, 2 * sum(math.comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c))


def test_attack_comparison_flags_use_a_paired_test() -> None:
    fgsm = attack_row("fgsm", robust_first(80))
    # one example in 200 is noise: the raw comparison 80.5 > 80 is not a broken attack
    noise = run_flags(None, [fgsm, attack_row("iterative", robust_first(81))])
    assert not noise["flag_pgd_weaker_than_fgsm"] and noise["flags"] == ""
    assert noise["flag_pgd_weaker_than_fgsm_p"] == pytest.approx(1.0)
    # 20 more survivors, all one way: a broken attack
    broken = run_flags(None, [fgsm, attack_row("iterative", robust_first(100))])
    assert broken["flag_pgd_weaker_than_fgsm"] and "weaker than FGSM" in broken["flags"]
    assert broken["flag_pgd_weaker_than_fgsm_p"] == pytest.approx(binomial_p(20, 0))
    # two iterative attacks: Holm over both comparisons
    two = run_flags(None, [fgsm, attack_row("iterative", robust_first(86)), attack_row("iterative", robust_first(79))])
    assert two["flag_pgd_weaker_than_fgsm_p"] == pytest.approx(2 * binomial_p(6, 0)) and not two["flag_pgd_weaker_than_fgsm"]


def test_square_flag_needs_significance_against_every_gradient_attack() -> None:
    gradient = [attack_row("fgsm", robust_first(90)), attack_row("iterative", robust_first(80))]
    masked = run_flags(None, [*gradient, attack_row("blackbox", robust_first(60))])
    assert masked["flag_square_beats_whitebox"] and "Square" in masked["flags"]
    assert masked["flag_square_beats_whitebox_p"] == pytest.approx(binomial_p(20, 0))  # Holm: max(2 * p30, p20)
    honest = run_flags(None, [*gradient, attack_row("blackbox", robust_first(78))])
    assert not honest["flag_square_beats_whitebox"] and not honest["flag_pgd_weaker_than_fgsm"] and honest["flags"] == ""


def test_large_eps_check_attacks_only_clean_correct_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.evaluation import sanity

    x, y, model = _data()
    model.net[-1].bias.data[0] += 50.0  # a bias towards class 0: the other classes are misclassified
    sizes: list[int] = []
    real = sanity.pgd
    monkeypatch.setattr(sanity, "pgd", lambda m, xb, yb, *a, **k: sizes.append(len(xb)) or real(m, xb, yb, *a, **k))
    checks = sanity_checks(model, x, y, 64)
    with torch.no_grad():
        correct = int((model(x.float() / 255).argmax(1) == y).sum())
    assert 0 < sum(sizes) == correct < len(y)  # the misclassified ones count as not robust, unattacked
    assert checks["large_eps_acc"] <= correct / len(y)


def test_comparison_flags_pool_the_seeds_of_a_row_with_examples_as_the_unit() -> None:
    fgsm, pgd = robust_first(80), robust_first(86)  # 6 examples, all one way: p = 2/64 with one seed

    def pooled(*seeds: tuple[np.ndarray, np.ndarray]) -> dict:
        runs = [{s: (np.arange(200), flags[k]) for s, flags in enumerate(seeds)} for k in range(2)]
        return run_flags(None, [{"family": "fgsm", "runs": runs[0]}, {"family": "iterative", "runs": runs[1]}])

    one = pooled((fgsm, pgd))
    assert one["flag_pgd_weaker_than_fgsm"] and one["flag_pgd_weaker_than_fgsm_p"] == pytest.approx(binomial_p(6, 0))
    # the same seed three times is no new evidence (pooled (seed, example) pairs gave 18 discordant, p = 8e-6)
    assert pooled(*[(fgsm, pgd)] * 3)["flag_pgd_weaker_than_fgsm_p"] == one["flag_pgd_weaker_than_fgsm_p"]


def fake_store(tmp_path, attacks: str, robust: dict[str, np.ndarray], cascade: bool):
    """A store holding one run's evaluations with the given robust flags (clean: the first 190 of 200)."""
    from bench.engine.store import Store
    from bench.plan.expand import expand
    from bench.suite.load import load_suite
    from tests.conftest import MINIMAL_SUITE, write_suite

    tmp_path.mkdir(exist_ok=True)
    text = MINIMAL_SUITE.replace("attacks: [fgsm]", f"attacks: [{attacks}]") + ("eval: {cascade: true}\n" if cascade else "")
    plan = expand(load_suite(write_suite(tmp_path / "s.yaml", text)))
    store = Store(tmp_path / "cache")
    for job in plan.eval_jobs:
        with store.writer("eval", job.key) as folder:
            np.savez(folder / "flags.npz", sample_id=np.arange(200), clean=robust_first(190), robust=robust[job.column])
            for name in ("metrics.json", "manifest.json"):
                (folder / name).write_text("{}")
    return plan, store


def test_under_cascade_a_broken_pgd_after_fgsm_is_not_passed_with_p_1(tmp_path) -> None:
    from bench.report.aggregate import collect
    from bench.report.render import leaderboard_markdown

    # PGD that breaks nothing: alone it would leave all 190 clean-correct points robust (p ~ 1e-33) ...
    alone = run_flags(None, [attack_row("fgsm", robust_first(80)), attack_row("iterative", robust_first(190))])
    assert alone["flag_pgd_weaker_than_fgsm"] and alone["flag_pgd_weaker_than_fgsm_p"] < 1e-30
    # ... after FGSM in a cascade it only attacked FGSM's survivors, so its column equals FGSM's
    plan, store = fake_store(tmp_path, "fgsm, pgd", {"FGSM": robust_first(80), "PGD-20": robust_first(80)}, cascade=True)
    assert plan.eval_jobs[1].after == (plan.eval_jobs[0].key,)
    rows = collect(plan, store)
    assert all(r.checks["flag_pgd_weaker_than_fgsm"] is None and r.checks["flag_pgd_weaker_than_fgsm_p"] is None for r in rows)
    board = leaderboard_markdown(plan, rows)
    assert "sanity flags (Square beats every gradient attack, an iterative attack weaker than FGSM) are not computed under cascade" in board


def test_under_cascade_square_last_raises_no_false_masking_alarm(tmp_path) -> None:
    from bench.report.aggregate import collect

    # an honest model: Square last breaks 10 more of the points every gradient attack left robust
    robust = {"FGSM": robust_first(90), "PGD-20": robust_first(80), "Square": robust_first(70)}
    plan, store = fake_store(tmp_path, "fgsm, pgd, square", robust, cascade=True)
    rows = collect(plan, store)
    assert all(r.checks["flag_square_beats_whitebox"] is None and r.flags == "" for r in rows)
    # compared as independent columns, the same flags would raise the alarm
    plan, store = fake_store(tmp_path / "plain", "fgsm, pgd, square", robust, cascade=False)
    assert all(r.checks["flag_square_beats_whitebox"] and "Square beats" in r.flags for r in collect(plan, store))
