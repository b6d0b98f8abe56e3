"""The registry, and contract tests parametrised over every registered model and dataset entry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch

import bench
from bench.registry import DATASETS, MODELS, REGISTRIES, Registry, RegistryError
from bench.registry import FAMILIES as registry_families


@dataclass(frozen=True)
class _P:
    a: int = 1


def test_duplicate_name_is_an_error() -> None:
    reg: Registry = Registry("thing")
    reg.register("x", params=_P, version=1)(lambda: None)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("x", params=_P, version=1)(lambda: None)


def test_unknown_name_suggests_close_matches() -> None:
    reg: Registry = Registry("thing")
    reg.register("pgd_at", params=_P, version=1)(lambda: None)
    with pytest.raises(RegistryError, match="did you mean 'pgd_at'"):
        reg.get("pgd-at")


def test_params_must_be_a_frozen_dataclass_and_version_positive() -> None:
    @dataclass
    class Mutable:
        a: int = 1

    reg: Registry = Registry("thing")
    with pytest.raises(RegistryError, match="frozen dataclass"):
        reg.register("m", params=Mutable, version=1)
    with pytest.raises(RegistryError, match="version"):
        reg.register("m", params=_P, version=0)


ALL_ENTRIES = [(kind, name) for kind, reg in REGISTRIES.items() for name in reg.names()]


@pytest.mark.parametrize("kind, name", ALL_ENTRIES, ids=[f"{k}:{n}" for k, n in ALL_ENTRIES])
def test_every_entry_is_documented_versioned_and_default_constructible(kind: str, name: str) -> None:
    entry = REGISTRIES[kind].get(name)
    assert entry.summary, f"{kind} {name} has no docstring"
    assert isinstance(entry.version, int) and entry.version >= 1
    params = entry.params()  # every parameter has a default
    assert dataclasses.is_dataclass(params)
    check = getattr(params, "validate", None)
    assert check is None or check() is None, "defaults must be valid"


FAMILIES = {"fgsm", "iterative", "blackbox", "ensemble", "none"}  # what the sanity flags and analyses read


def test_the_registry_knows_the_families_the_sanity_flags_read() -> None:
    assert set(registry_families) == FAMILIES


@pytest.mark.parametrize("name", bench.ATTACKS.names())
def test_every_attack_declares_its_family_for_the_sanity_flags(name: str) -> None:
    assert bench.ATTACKS.get(name).family in FAMILIES


MODEL_SHAPES = {"small_cnn": (1, 28, 28), "small_cnn_trades": (1, 28, 28), "tiny_cnn": (1, 12, 12)}
BIG = {"wrn_34_10", "wrn_28_10"}  # covered by the model tests at their own sizes


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n not in BIG])
def test_model_contract(name: str) -> None:
    """[0,1] inputs in, (B, C) logits out, on the model's natural shape; normalisation is inside."""
    shape = MODEL_SHAPES.get(name, (3, 32, 32))
    torch.manual_seed(0)
    model = bench.build_model(name, num_classes=7, shape=shape).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    normalised = bench.build_model(name, num_classes=7, shape=shape, mean=(0.5,) * shape[0], std=(0.25,) * shape[0], normalize=True)
    assert torch.allclose(normalised.normalize(torch.full((1, *shape), 0.75)), torch.ones(1, *shape))
    assert torch.equal(model.normalize.mean, torch.zeros_like(model.normalize.mean))  # off unless asked


def test_synthetic_dataset_contract() -> None:
    entry = DATASETS.get("synthetic")
    a = entry.fn(entry.params(), [])
    b = entry.fn(entry.params(), [])
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape == (512, 1, 12, 12)
    assert a.test_y.dtype == torch.int64 and set(a.test_y.tolist()) == set(range(4))
    assert torch.equal(a.train_x, b.train_x)  # seeded
    other = entry.fn(dataclasses.replace(entry.params(), seed=1), [])
    assert not torch.equal(a.train_x, other.train_x)


def test_bench_ls_shows_each_kinds_own_fields(capsys) -> None:
    """Besides the parameters: an attack's family and cost, a defence's selection and cost, a corruption's family."""
    from bench.commands.cli import main

    for kind in ("attacks", "defences", "datasets", "models", "corruptions"):
        assert main(["ls", kind]) == 0
    out = capsys.readouterr().out.splitlines()
    after = {line.split(" (v")[0]: out[i + 1].strip() for i, line in enumerate(out[:-1]) if " (v" in line and not line.startswith(" ")}
    assert after["pgd"] == "[family iterative; 42 forward-equivalents per attacked image at the defaults]"
    assert after["square"].startswith("[family blackbox; ")
    assert after["trades"].startswith("[best_val selects on robust accuracy; ") and "presets: official" in after["trades"]
    assert after["fog"] == "[family weather; severities 1-5]" and after["cifar10"] == "[50,000 train / 10,000 test images]"
