"""Task kinds own their entries: each kind's declared files are exactly what the worker writes, a kind
declared in one place is seen by the store and `bench cache`, and the scheduler orders ready tasks by
the same estimator the progress display's ETA reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.commands import cache as cache_cmd
from bench.commands.cli import main
from bench.core.errors import BenchError
from bench.core.progress import Progress
from bench.engine import entries
from bench.engine.scheduler import critical_first
from bench.engine.store import ENTRY, Store
from bench.plan import kinds
from bench.plan.estimate import Estimator
from bench.plan.expand import expand
from bench.plan.kinds import KINDS, Kind
from bench.suite.load import load_suite
from tests.conftest import write_suite
from tests.fakes import FakeTask

# every kind: a shared start (FR starts at the first milestone), trainings, an analysis, sanity checks,
# a sharded evaluation (its shards and the merge) and a plain one
SUITE = """\
name: kinds
dataset: {synthetic: {num_classes: 4, size: 12, n_train: 128, n_test: 32}}
model: {tiny_cnn: {width: 8}}
threat: {norm: Linf, eps: 24/255}
train: {epochs: 3, batch_size: 32, schedule: {name: piecewise, milestones: [2], gamma: 0.1}, val_fraction: 0.125, val_attack: {steps: 1}}
defences: [{pgd_at: {steps: 1}}, {fr: {steps: 1}}]
wa: [none, swa]
attacks: [fgsm, {pgd: {steps: 2, shards: 2}}]
eval: {n_examples: 32, batch_size: 16}
analysis: {rows: [pgd_at], n_images: 8, heatmap_images: 2, attack_steps: 1}
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("kinds")
    suite = write_suite(base / "kinds.yaml", SUITE)
    args = ["run", str(suite), "--cache-dir", str(base / "cache"), "--results-dir", str(base / "results"), "--device", "cpu", "--quiet"]
    assert main(args) == 0
    return suite, base / "cache"


def test_every_entry_written_holds_exactly_its_kinds_declared_files(ran: tuple[Path, Path]) -> None:
    suite, cache = ran
    plan = expand(load_suite(suite))
    assert {t.kind for t in plan.tasks} == set(KINDS)  # the suite has a task of every declared kind
    store = Store(cache)
    written = list(store.entries())
    assert {kind for kind, _ in written} == set(KINDS) and len(written) == len(plan.tasks)
    for kind, key in written:
        recorded = sorted(store.files(kind, key))
        on_disk = sorted(p.relative_to(store.path(kind, key)).as_posix() for p in store.path(kind, key).rglob("*") if p.is_file())
        assert on_disk == sorted([*recorded, ENTRY])
        assert KINDS[kind].problems(recorded) == [], (kind, recorded)
        assert set(KINDS[kind].required) <= set(recorded)
    train = next(t for t in plan.train_jobs)
    weights = sorted(store.files("train", train.key))
    assert "weights/raw/last.pt" in weights and kinds.weights_file("raw", "last") == "weights/raw/last.pt"
    evaluation = next(e for e in plan.eval_jobs if e.weights.wa is None)
    assert evaluation.weights.file == kinds.weights_file(evaluation.weights.tag, evaluation.weights.checkpoint)
    # the typed reads give what the old named reads gave
    e = next(e for e in plan.eval_jobs if e.shards)
    assert entries.read_metrics(store, kinds.EVAL, e.key) == store.read_json("eval", e.key, "metrics.json")
    flags = entries.read_flags(store, kinds.EVAL, e.key)
    assert sorted(flags) == ["clean", "robust", "sample_id"] and len(flags["sample_id"]) == 32
    shards = [entries.read_flags(store, kinds.SHARD, k)["sample_id"] for k in e.shards]
    assert sorted(int(i) for s in shards for i in s) == sorted(int(i) for i in flags["sample_id"])
    assert entries.read_log(store, train.key)[0]["epoch"] in (0, 1, 2)


def test_a_kind_declared_in_one_place_is_seen_by_the_store_and_the_cache_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    store = Store(tmp_path / "cache")
    with pytest.raises(BenchError, match="'probe' is not a declared task kind"), store.writer("probe", "k" * 64):
        pass
    probe = Kind("probe", ("notes.json", "extra/*.json"), optional=("extra/*.json",))
    monkeypatch.setitem(KINDS, "probe", probe)
    assert kinds.names()[-1] == "probe" and "probe" in kinds.names(evaluate=False)  # what the scheduler runs by default
    with entries.writing(store, probe, "a" * 64) as tmp:
        (tmp / "notes.json").write_text(json.dumps({"ok": 1}))
    assert ("probe", "a" * 64) in list(store.entries()) and store.has("probe", "a" * 64)
    listing = cache_cmd.ls(store)
    assert f"probe     {'a' * 16}" in listing and "1 entries" in listing
    assert cache_cmd.verify(store, print) == 0
    assert "1 entries checked, 0 damaged" in capsys.readouterr().out
    assert cache_cmd.show(store, "aaaa").startswith(f"probe/{'a' * 64}\npath: ") and "integrity: ok" in cache_cmd.show(store, "aaaa")
    # an entry that does not match its kind is never committed: an undeclared file, a required one missing
    for files, problem in [({"notes.json": "{}", "other.txt": "x"}, "other.txt is not a file of a probe entry"),
                           ({"extra/a.json": "{}"}, "no notes.json")]:  # fmt: skip
        with pytest.raises(BenchError, match=problem), entries.writing(store, probe, "b" * 64) as tmp:
            for name, text in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_text(text)
        assert not store.has("probe", "b" * 64) and not store.path("probe", "b" * 64).exists()
    with pytest.raises(ValueError, match="already declared differently"):
        kinds.declare(Kind("probe", ("other.json",)))


def test_kinds_declare_their_files_and_how_they_are_timed() -> None:
    assert kinds.PREFIX.measured_as == "train" and kinds.SHARD.measured_as == "shard"
    assert kinds.TRAIN.declares("weights/swa-1234abcd/best_val.pt") and not kinds.TRAIN.declares("weights/last.pt")
    assert not kinds.TRAIN.declares("weights/raw/x/last.pt")  # a `*` is one path segment
    assert kinds.TRAIN.problems(["spec.json", "log.jsonl", "manifest.json"]) == []  # no weights: optional
    assert kinds.EVAL.problems(["spec.json", "metrics.json", "manifest.json"]) == ["no flags.npz"]
    assert kinds.names(evaluate=False) == ("prefix", "train", "analysis")
    assert entries.holds_flags(kinds.SHARD) and not entries.holds_flags(kinds.ANALYSIS)



def test_the_scheduler_and_the_eta_read_one_estimator() -> None:
    """The longest chain first, by the estimator's seconds; the ETA the progress display prints is the
    same estimator's work left, so a measurement reorders the scheduler and moves the ETA together."""
    train, short, long_ = FakeTask("train", "t", spec={"train": {"epochs": 2}}), FakeTask("sanity", "s"), FakeTask("analysis", "a")
    evals = [FakeTask("eval", f"e{i}") for i in range(2)]
    needed_by: dict[str, list] = {"t": evals}  # the training unlocks two evaluations
    est = Estimator({"t": 4.0, "s": 1.0, "a": 30.0, "e0": 1.0, "e1": 1.0})
    prog = Progress(False, estimator=est)
    prog.start_plan([train, short, long_, *evals])
    assert critical_first([short, train, long_], needed_by, est) == [long_, train, short]
    assert prog.eta() == (37.0, [])
    est.ran(FakeTask("train", "other", spec={"train": {"epochs": 2}}), 80.0)  # a training of the same group took 80 s
    assert critical_first([short, train, long_], needed_by, est) == [train, long_, short]
    assert prog.eta() == (80.0 + 1 + 30 + 2, [])
    assert critical_first([short, train, long_], needed_by, Estimator()) == [train, short, long_]  # 1 s each: the longer chain, then plan order
