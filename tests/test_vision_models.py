"""Paper-scale models: parameter counts against the published figures, forward shapes (CPU, batch 2)."""

from __future__ import annotations

import pytest
import torch

import bench


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "name, exact, published",
    [("resnet18", 11_173_962, 11.17), ("preact_resnet18", 11_172_170, 11.17), ("wrn_28_10", 36_479_194, 36.48)],
)
def test_parameter_counts(name, exact, published):
    model = bench.build_model(name, num_classes=10, shape=(3, 32, 32))
    assert n_params(model) == exact
    assert abs(n_params(model) / 1e6 - published) <= 0.01


def test_wrn_34_10_count_forward_and_idle_sub_block():
    model = bench.build_model("wrn_34_10", num_classes=10, shape=(3, 32, 32)).eval()
    idle = n_params(model.net.sub_block1)  # TRADES builds it but never calls it
    assert idle == 2_102_112 and n_params(model) == 48_262_586
    assert abs((n_params(model) - idle) / 1e6 - 46.16) <= 0.01  # the published count is what forward uses
    assert "net.sub_block1.layer.0.convShortcut.weight" in model.state_dict()  # TRADES checkpoint names
    calls = []
    model.net.sub_block1.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert not calls


def test_wrn_init_follows_trades():
    net = bench.build_model("wrn_28_10", num_classes=10, shape=(3, 32, 32)).net
    assert torch.all(net.bn1.weight == 1) and torch.all(net.bn1.bias == 0) and torch.all(net.fc.bias == 0)
    w = net.block3.layer[0].conv1.weight  # normal(0, sqrt(2 / (3 * 3 * 640)))
    assert abs(w.std().item() - (2 / (9 * 640)) ** 0.5) < 0.002


def test_wrn_28_10_runs_at_64x64():
    model = bench.build_model("wrn_28_10", num_classes=200, shape=(3, 64, 64)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 200)


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18"])
@pytest.mark.parametrize("size", [32, 64])
def test_resnet_forward_shapes(name, size):
    model = bench.build_model(name, num_classes=10, shape=(3, size, size)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18", "wrn_28_10"])
def test_100_class_head(name):
    net = bench.build_model(name, num_classes=100, shape=(3, 32, 32)).net
    head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head.out_features == 100
    if name == "resnet18":
        with torch.no_grad():
            assert net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_any_channel_count_and_normalisation():
    kw = {"mean": (0.1307,), "std": (0.3081,), "normalize": True}
    model = bench.build_model("resnet18", num_classes=10, shape=(1, 28, 28), **kw)
    assert model.net.conv1.in_channels == 1
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor([0.1307]))
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
