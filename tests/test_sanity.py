"""Sanity flags: a deliberately gradient-masked model is flagged; an honest one is not."""

from __future__ import annotations

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


def test_attack_comparison_flags() -> None:
    rows = [
        {"family": "fgsm", "robust_acc": 0.40},
        {"family": "iterative", "robust_acc": 0.45},
        {"family": "blackbox", "robust_acc": 0.30},
    ]
    flags = run_flags(None, rows)
    assert flags["flag_square_beats_whitebox"] and flags["flag_pgd_weaker_than_fgsm"]
    fine = run_flags(None, [{"family": "fgsm", "robust_acc": 0.5}, {"family": "iterative", "robust_acc": 0.3}])
    assert not fine["flag_pgd_weaker_than_fgsm"] and "flag_square_beats_whitebox" not in fine and fine["flags"] == ""
