"""The FLOP model's figures for every built-in attack, defence and dataset, and the per-kind totals of
every shipped suite, pinned as they were when ``cost.py`` knew plug-ins by name: the plug-ins now
declare their costs beside their code (``cost=``, ``train_cost=``, ``info=``/``sizes=``), and every
estimate must stay the same number."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench  # noqa: F401  (registers the built-ins)
from bench.plan import cost
from bench.plan.expand import expand
from bench.registry import ATTACKS, DATASETS, DEFENCES
from bench.suite.load import load_suite

ROOT = Path(__file__).resolve().parents[1]

ATTACK_F = {  # (name, params) -> forward-equivalents per attacked image
    ("apgd-ce", ()): 101.0, ("apgd-t", ()): 901.0, ("autoattack", ()): 5951.0, ("cw", ()): 62, ("fgsm", ()): 4,
    ("none", ()): 1, ("pgd", ()): 42, ("square", ()): 2501.0,
    ("pgd", (("steps", 10), ("restarts", 3))): 65, ("cw", (("steps", 100), ("restarts", 2))): 404,
    ("fgsm", (("eot", 5),)): 4, ("pgd", (("steps", 7), ("eot", 4))): 16,
    ("autoattack", (("version", "rand"),)): 5951.0,
    ("autoattack", (("version", "custom"), ("attacks", ("apgd-ce", "apgd-t", "fab-t", "square")), ("n_iter", 50), ("n_target_classes", 2))): 2801.0,
    ("apgd-t", (("n_iter", 20), ("n_restarts", 2), ("n_target_classes", 3))): 121.0,
    ("square", (("n_queries", 100),)): 51.0, ("apgd-ce", (("n_restarts", 4),)): 401.0,
}  # fmt: skip
DEFENCE_F = {"awp": 26, "fr": 26, "mart": 26, "pgd_at": 23, "sar": 26, "standard": 3, "trades": 27}
DATASET = {  # shape, classes, train size, test size
    "cifar10": ((3, 32, 32), 10, 50000, 10000), "cifar100": ((3, 32, 32), 100, 50000, 10000),
    "fashion-mnist": ((1, 28, 28), 10, 60000, 10000), "mnist": ((1, 28, 28), 10, 60000, 10000),
    "svhn": ((3, 32, 32), 10, 73257, 26032), "synthetic": ((3, 32, 32), 10, 50000, 10000),
    "tiny-imagenet": ((3, 64, 64), 200, 100000, 10000),
}  # fmt: skip
SUITES = {  # FLOPs per task kind at F = 1
    "cifar10": {"eval": 387840000.0, "prefix": 98467110.0, "sanity": 90112.0, "train": 364842450.0},
    "cifar100": {"eval": 387840000.0, "prefix": 98467110.0, "sanity": 90112.0, "train": 364842450.0},
    "fashion-mnist": {"eval": 678720000.0, "prefix": 47230344.0, "sanity": 157696.0, "train": 332180856.0},
    "quickstart": {"analysis": 118560.0, "eval": 1248000.0, "prefix": 91576.8, "sanity": 88000.0, "train": 713714.4},
    "smoke": {"analysis": 23936.0, "eval": 16960.0, "sanity": 35200.0, "train": 2633601.6},
    "svhn": {"eval": 1009625088.0, "prefix": 144071179.875, "sanity": 90112.0, "train": 533888861.625},
    "tiny-imagenet": {"eval": 387840000.0, "prefix": 196510860.0, "sanity": 90112.0, "train": 728273700.0},
}


class _Ref:
    def __init__(self, name: str, params: object) -> None:
        self.name, self.params = name, params


def test_every_builtin_is_pinned() -> None:
    assert {n for n, _ in ATTACK_F} == set(ATTACKS.names())
    assert set(DEFENCE_F) == set(DEFENCES.names())
    assert set(DATASET) == set(DATASETS.names())


@pytest.mark.parametrize("name, params", list(ATTACK_F), ids=[f"{n}{dict(p)}" for n, p in ATTACK_F])
def test_attack_forwards_are_as_before(name: str, params: tuple) -> None:
    assert cost.attack_forwards(name, ATTACKS.get(name).params(**dict(params))) == ATTACK_F[(name, params)]


@pytest.mark.parametrize("name", sorted(DEFENCE_F))
def test_defence_training_forwards_are_as_before(name: str) -> None:
    assert cost.train_forwards(_Ref(name, DEFENCES.get(name).params())) == DEFENCE_F[name]


@pytest.mark.parametrize("name", sorted(DATASET))
def test_dataset_shapes_and_sizes_are_as_before(name: str) -> None:
    shape, classes, n_train, n_test = DATASET[name]
    assert cost.shape_and_classes(name) == (shape, classes)
    assert cost.dataset_sizes(name) == (n_train, n_test)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_every_shipped_suites_estimate_is_as_before(suite: str) -> None:
    plan = expand(load_suite(ROOT / "suites" / f"{suite}.yaml"))
    totals: dict[str, float] = {}
    for task in plan.tasks:
        flops, _ = cost.task_flops(task, plan, 1.0)
        totals[task.kind] = totals.get(task.kind, 0.0) + flops
    assert totals == pytest.approx(SUITES[suite], rel=1e-12)
