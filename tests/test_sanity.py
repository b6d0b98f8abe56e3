"""Sanity flags: a deliberately gradient-masked model is flagged; an honest one is not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import bench
from bench.sanity import run_flags, sanity_checks


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
    from bench import sanity

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
