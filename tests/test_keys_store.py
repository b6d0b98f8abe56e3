"""Golden cache keys, key sensitivity, and atomic store writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bench.core.files import atomic_write_text
from bench.engine.store import Store
from bench.plan.expand import expand
from bench.plan.keys import canonical_json, digest
from bench.suite.load import load_suite
from tests.conftest import SUITES, write_suite

SPEC = """\
name: golden
dataset: {synthetic: {num_classes: 3}}
model: tiny_cnn
threat: {norm: Linf, eps: 8/255}
train: {epochs: 2, batch_size: 32, schedule: {milestones: [1]}}
defences: [standard, {pgd_at: {steps: 3}}]
attacks: [{pgd: {steps: 5}}]
eval: {n_examples: 100}
seeds: [0]
"""

# An accidental cache invalidation shows up here as a diff in review. Change these only together
# with a deliberate protocol/plug-in version bump.
GOLDEN_TRAIN = {
    "standard": "516d1e672a5e4d5f7e7db0a333f110677447a306c5e5c59bf07678ba94f9f114",
    "pgd_at": "8ffe8c1126ff1334e6de383a102790fa40889ea9dfc572ff55649903c7f3be26",
}
GOLDEN_EVAL_FIRST = "713e3f84c190952486f390141233fdfae1970794da13f195146acbf553993c43"


def plan_for(tmp_path: Path, text: str = SPEC):
    return expand(load_suite(write_suite(tmp_path / "golden.yaml", text)))


def test_golden_cache_keys(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    assert {j.defence.name: j.key for j in plan.train_jobs} == GOLDEN_TRAIN
    assert plan.eval_jobs[0].key == GOLDEN_EVAL_FIRST


def test_defaults_are_filled_in_so_spelling_them_out_keeps_the_key(tmp_path: Path) -> None:
    explicit = SPEC.replace("{pgd_at: {steps: 3}}", "{pgd_at: {steps: 3, alpha: null, attack_bn: eval}}")
    explicit = explicit.replace("eps: 8/255", "eps: 16/510")
    assert [j.key for j in plan_for(tmp_path, explicit).train_jobs] == [j.key for j in plan_for(tmp_path).train_jobs]


@pytest.mark.parametrize(
    "old, new, changes_train",
    [
        ("epochs: 2", "epochs: 3", True),
        ("eps: 8/255", "eps: 4/255", True),
        ("seeds: [0]", "seeds: [1]", True),
        ("{pgd_at: {steps: 3}}", "{pgd_at: {steps: 4}}", True),
        ("n_examples: 100", "n_examples: 99", False),
        ("{pgd: {steps: 5}}", "{pgd: {steps: 6}}", False),
        ("name: golden", "name: renamed", False),
    ],
)
def test_keys_change_exactly_when_results_can(tmp_path: Path, old: str, new: str, changes_train: bool) -> None:
    a, b = plan_for(tmp_path), plan_for(tmp_path, SPEC.replace(old, new))
    assert ([j.key for j in a.train_jobs] != [j.key for j in b.train_jobs]) == changes_train
    eval_changes = old != "name: golden"
    assert ([j.key for j in a.eval_jobs] != [j.key for j in b.eval_jobs]) == eval_changes


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})


def test_store_commits_only_complete_entries(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.writer("train", "k1") as tmp:
        (tmp / "a.txt").write_text("x")
        assert not store.has("train", "k1")  # invisible until the block finishes
    assert store.has("train", "k1")
    assert (store.path("train", "k1") / "a.txt").read_text() == "x"
    assert sorted(os.listdir(tmp_path / "train")) == ["k1"]
    assert os.listdir(tmp_path / "tmp") == []  # no temp directories left behind


def test_store_never_caches_failures(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.writer("eval", "bad") as tmp:
            (tmp / "partial").write_text("half")
            raise RuntimeError("boom")
    assert not store.has("eval", "bad")
    assert not (tmp_path / "eval").exists() and os.listdir(tmp_path / "tmp") == []


def test_store_keeps_the_first_complete_entry_and_replaces_leftovers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.writer("train", "k") as tmp:
        (tmp / "v").write_text("first")
    with store.writer("train", "k") as tmp:
        (tmp / "v").write_text("second")
    assert (store.path("train", "k") / "v").read_text() == "first"
    leftover = store.path("train", "half")
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("")
    assert not store.has("train", "half")
    with store.writer("train", "half") as tmp:
        (tmp / "v").write_text("ok")
    assert sorted(os.listdir(store.path("train", "half"))) == ["ENTRY", "v"]


def test_atomic_write_text_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "out" / "f.md", "hello")
    atomic_write_text(tmp_path / "out" / "f.md", "again")
    assert os.listdir(tmp_path / "out") == ["f.md"]
    assert (tmp_path / "out" / "f.md").read_text() == "again"


# sha256 over the sorted task keys (train, eval, sanity, ...) of shipped suites, as planned before
# attacks gained ``eot``: a parameter added later must leave every existing key as it was.
SHIPPED_KEYS = {
    "quickstart.yaml": "d9f04821e75252af3d6fefb16da410d92e6654f27f121357ceb6d8fddeeea5f4",
    "cifar10.yaml": "04e2a0ed0317d20040612ed20d72a7d06b97cd22679a6adcb31c2033076c3324",
    "fashion-mnist.yaml": "a0d7043527d4af1342ccdc2ca062d412549f30a3f70c439cd2b770b1da3acf30",
}


# The quickstart moved from bf16 to `precision: auto` (#22), which changes its keys by design; with its
# earlier precision set back, every key is as it was.
AS_PINNED = {"quickstart.yaml": ["train.precision=bf16", "eval.precision=bf16"]}


@pytest.mark.parametrize("name", sorted(SHIPPED_KEYS))
def test_shipped_suites_keep_their_keys(name: str) -> None:
    keys = sorted(t.key for t in expand(load_suite(SUITES / name, AS_PINNED.get(name))).tasks)
    assert hashlib.sha256("\n".join(keys).encode()).hexdigest() == SHIPPED_KEYS[name]


def test_eot_is_keyed_only_when_it_is_not_1(tmp_path: Path) -> None:
    keys = lambda attack: [j.key for j in plan_for(tmp_path, SPEC.replace("{pgd: {steps: 5}}", attack)).eval_jobs]
    assert keys("{pgd: {steps: 5, eot: 1}}") == keys("{pgd: {steps: 5}}") != keys("{pgd: {steps: 5, eot: 2}}")


# Every shipped suite as planned at 4360b7e, the last commit before the #24 restructure (the
# layout moved every module; no key may move with it): (number of tasks, sha256 of the sorted keys).
BEFORE_RESTRUCTURE = {
    "cifar10.yaml": (45, "04e2a0ed0317d20040612ed20d72a7d06b97cd22679a6adcb31c2033076c3324"),
    "cifar100.yaml": (45, "7dec18343053d1c25adde1e7734640bc02d79428b32c052e5162e62739e9bcfd"),
    "fashion-mnist.yaml": (78, "a0d7043527d4af1342ccdc2ca062d412549f30a3f70c439cd2b770b1da3acf30"),
    "papers/fashion-mnist-table.yaml": (56, "84d3c8ee7814b6b2191890ea4cc5d251dbc15af64ce8bf76ef5bd47e16aa98fc"),
    "papers/fr-aaai23-table1-lpf.yaml": (8, "8ecbc445a78a143caf3177c1edb2fe637eae53271b5869bbeb432497efef3388"),
    "papers/fr-aaai23-table2.yaml": (56, "95235c97529f2ddf7bbc5b3d864aafe44be3f904c99373243a468f5065ffc8cb"),
    "papers/sar-2306.14262.yaml": (22, "ec76902fe1771d79ffdefa20f61ebf12b352e69dcabf7e9b7759a4e35509858f"),
    "quickstart.yaml": (140, "eaed0b85f501c32c650a7f2a416889fbbd40f8916aac412e2268a790a87b5fa1"),
    "smoke.yaml": (16, "837a5c0b8b6fc7db02a8c934c00a58933c6f2e77ac6b66e4b13a614a761d6423"),
    "svhn.yaml": (45, "51603c81b55ab3c55b5c5927c80a1d28501a9837c2f723ff81f41db7dd979471"),
    "tiny-imagenet.yaml": (45, "67fd7806905fcbfe9a6792974b98f5cf0f5a0610ec85f40cfbd4ff4c8c76660c"),
    "threats/fashion-mnist.yaml": (160, "755afcff0710c2dd029735f4927d71e15a99b050e2385b8b7eecde621a1511ab"),  # shipped with #26
}


def test_every_shipped_suite_is_pinned() -> None:
    shipped = {str(p.relative_to(SUITES)) for p in SUITES.rglob("*.yaml") if not p.name.startswith("_")}
    assert shipped == set(BEFORE_RESTRUCTURE), "a new shipped suite: pin its keys here"


@pytest.mark.parametrize("name", sorted(BEFORE_RESTRUCTURE))
def test_shipped_suites_plan_the_keys_they_planned_before_the_restructure(name: str) -> None:
    # an external column's files are made by a script beside its suite (their tasks are keyed by content): not pinned
    keys = sorted(t.key for t in expand(load_suite(SUITES / name)).tasks if getattr(t, "group", "") != "external")
    assert (len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()) == BEFORE_RESTRUCTURE[name]
