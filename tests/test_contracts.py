"""The plug-in contracts: each "adding a ..." page's example runs as written, a broken registration fails
when the plug-in is registered in one line naming the plug-in and the field, and every registered
entry of every registry fills its spec's fields with usable values."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bench
from bench.commands.cli import main
from bench.core.errors import BenchError
from bench.engine.executors import EXECUTORS, ExecutorConfig, ExecutorSpec, executor_config
from bench.registry import (
    ATTACKS,
    CORRUPTION_FAMILIES,
    CORRUPTIONS,
    DATASETS,
    DEFENCES,
    FAMILIES,
    MODELS,
    REGISTRIES,
    AttackSpec,
    CorruptionSpec,
    DatasetSpec,
    DefenceSpec,
    ModelSpec,
    RegistryError,
)
from bench.types import DatasetInfo
from tests.conftest import MINIMAL_SUITE, write_suite

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "attack": ROOT / "bench/attacks/README.md",
    "dataset": ROOT / "bench/data/README.md",
    "model": ROOT / "bench/models/README.md",
    "executor": ROOT / "bench/engine/executors/README.md",
}


def example(kind: str, index: int = 0) -> str:
    """The ``index``-th Python block of the page ``kind``."""
    return re.findall(r"```python\n(.*?)```", PAGES[kind].read_text(), re.DOTALL)[index]


def run_example(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102 - the page's own example
    return module


@pytest.fixture
def plugins():
    """The attack, dataset and model pages' examples, registered for one test."""
    mods = [run_example(example(k), f"contract_{k}") for k in ("attack", "dataset", "model")]
    yield mods
    ATTACKS.unregister("random_sign")
    DATASETS.unregister("halves")
    MODELS.unregister("mlp")
    for m in mods:
        sys.modules.pop(m.__name__, None)


def broken(source: str, old: str, new: str) -> str:
    assert old in source, f"the page's example no longer has {old!r}"
    return source.replace(old, new)


def one_line_error(source: str, name: str, error: type[Exception] = RegistryError) -> str:
    with pytest.raises(error) as e:
        run_example(source, name)
    sys.modules.pop(name, None)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_the_examples_register_and_work_end_to_end(plugins, tmp_path: Path) -> None:
    data = bench.data.load_dataset("halves", DATASETS.get("halves").params())
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (256, 1, 8, 8) and set(data.test_y.tolist()) == {0, 1}
    torch.manual_seed(0)
    model = bench.build_model("mlp", num_classes=2, shape=(1, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # learn the halves so the attack has correct points to attack
        opt.zero_grad()
        F.cross_entropy(model(data.train_x.float() / 255), data.train_y).backward()
        opt.step()
    result = bench.evaluate(
        model, dataset="halves", attacks=["random_sign", {"random_sign": {"tries": 1}}], eps=0.5, n_examples=128,
        device="cpu", cache_dir=tmp_path, progress=False, sanity=False,
    )  # fmt: skip
    acc = result.rows["accuracy"]
    assert {"RandSign-4", "RandSign-1"} <= set(result.rows.index)
    assert acc["Clean"] > 90 and acc["RandSign-4"] <= acc["RandSign-1"] <= acc["Clean"]
    assert acc["RandSign-4"] < acc["Clean"]  # at eps 0.5 random corners flip some of the halves
    assert ATTACKS.get("random_sign").cost(ATTACKS.get("random_sign").params()) == 9
    assert bench.attacks.label("random_sign", ATTACKS.get("random_sign").params(tries=2)) == "RandSign-2"


def test_a_broken_example_fails_when_registered_in_one_line() -> None:
    attack = example("attack")
    assert one_line_error(broken(attack, 'family="blackbox",', ""), "no_family") == (
        "attack 'random_sign': missing required field 'family' (one of none, fgsm, iterative, ensemble, blackbox)"
    )
    assert one_line_error(broken(attack, 'family="blackbox"', 'family="random"'), "bad_family") == (
        "attack 'random_sign': family: unknown 'random' (known: none, fgsm, iterative, ensemble, blackbox)"
    )
    assert "unknown field 'costs'" in one_line_error(broken(attack, "cost=", "costs="), "bad_field")
    assert "cost: expected a function, got 9" in one_line_error(broken(attack, "cost=lambda p: 1 + 2 * p.tries", "cost=9"), "bad_cost")
    assert "random_sign must take (model, x, y, threat, params)" in one_line_error(broken(attack, "x, y, threat, p:", "x, y, p:"), "bad_fn")
    dataset = example("dataset")
    assert one_line_error(broken(dataset, "sizes=(256, 128)", "sizes=(256,)"), "bad_sizes") == (
        "dataset 'halves': sizes: expected (train, test) positive counts, got (256,)"
    )
    assert "info: expected a DatasetInfo" in one_line_error(broken(dataset, "info=INFO", "info=2"), "bad_info")
    model = example("model")
    assert one_line_error(broken(model, "class MLPParams(ModelParams):", "class MLPParams:"), "no_normalize") == (
        "model 'mlp': params: must derive from bench.models.ModelParams (a `normalize` field)"
    )
    for name in ("random_sign", "halves", "mlp"):  # nothing half-registered
        assert name not in ATTACKS and name not in DATASETS and name not in MODELS


def test_a_defence_contract_is_checked_at_registration() -> None:
    @dataclasses.dataclass(frozen=True)
    class P:
        steps: int = 2

    def loss(model, x, y, p, ctx):
        """A loss."""

    with pytest.raises(RegistryError, match=r"^defence 'd': selection: expected robust or clean, got 'best'$"):
        DEFENCES.register("d", params=P, version=1, selection="best")
    with pytest.raises(RegistryError, match=r"^defence 'd': unknown field 'train_costs' \(a defence takes selection, "):
        DEFENCES.register("d", params=P, version=1, train_costs=lambda p: 3)
    with pytest.raises(RegistryError, match=r"^defence 'd': presets: expected a mapping of preset name to a P instance$"):
        DEFENCES.register("d", params=P, version=1, presets={"official": {"steps": 3}})
    assert "d" not in DEFENCES
    DEFENCES.register("d", params=P, version=1)(loss)
    try:
        from bench.plan import cost

        entry = DEFENCES.get("d")
        assert entry.selection == "robust" and entry.train_cost is None and entry.caps["presets"] == {}
        assert cost.train_forwards(types.SimpleNamespace(name="d", params=P(steps=5))) == 13  # the stated default
    finally:
        DEFENCES.unregister("d")


def test_an_attack_without_cost_is_estimated_as_pgd20_and_validate_says_so(plugins, tmp_path: Path) -> None:
    from bench.engine.store import Store
    from bench.plan import cost
    from bench.plan.expand import expand

    source = broken(example("attack"), '"random_sign"', '"random_sign_free"')
    source = broken(source, "cost=lambda p: 1 + 2 * p.tries,", "")
    run_example(source, "contract_free")
    try:
        suite = bench.load_suite(write_suite(tmp_path / "s.yaml", MINIMAL_SUITE.replace("[fgsm]", "[fgsm, random_sign_free]")))
        plan = expand(suite)
        assert cost.attack_forwards("random_sign_free", None) == cost.DEFAULT_ATTACK_F == 41
        line = cost.summary(plan, torch.device("cpu"), Store(tmp_path / "c"))
        assert line.splitlines()[1] == "  note: random_sign_free declares no cost; estimated as PGD-20 (41 forward-equivalents per image)"
        assert cost.uncosted(expand(bench.load_suite(write_suite(tmp_path / "t.yaml", MINIMAL_SUITE)))) == []
    finally:
        ATTACKS.unregister("random_sign_free")
        sys.modules.pop("contract_free", None)


@pytest.fixture
def threads():
    module = run_example(example("executor"), "contract_executor")
    yield module
    EXECUTORS.unregister("threads")
    sys.modules.pop("contract_executor", None)


def test_the_executor_example_runs_a_suite(threads, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert re.search(r"--threads N +threads: tasks at once", capsys.readouterr().out)
    conf = write_suite(tmp_path / "exec.yaml", "executor: threads\nthreads_threads: 3\n")
    assert executor_config(conf) == ExecutorConfig("threads", {"threads": 3})
    assert executor_config(conf, threads_threads=1, workers=None).options == {"threads": 1}  # the flag wins
    with pytest.raises(BenchError, match=r"^--threads: expected a positive number of threads, got 0$"):
        executor_config(name="threads", threads_threads=0)
    with pytest.raises(BenchError, match=r"^--workers: only for --executor local \(the threads cluster"):
        executor_config(name="threads", workers=2)
    suite = write_suite(tmp_path / "s.yaml", MINIMAL_SUITE)
    args = ["run", str(suite), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    assert main([*args, "--executor", "threads", "--threads", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| standard" in out and (tmp_path / "r" / "t" / "leaderboard.md").exists()
    store = bench.engine.store.Store(tmp_path / "c")
    assert all(store.has(t.kind, t.key) for t in bench.expand(bench.load_suite(suite)).tasks)


def test_an_executor_spec_is_checked_at_registration() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoDefault:
        hosts: int

    @dataclasses.dataclass
    class Mutable:
        hosts: int = 1

    @dataclasses.dataclass(frozen=True)
    class Fine:
        hosts: int = 1

    with pytest.raises(BenchError, match=r"^executor 'x': option 'hosts' needs a default$"):
        EXECUTORS.register(ExecutorSpec("x", NoDefault, lambda o, w, c: None))
    with pytest.raises(BenchError, match=r"^executor 'x': options must be a frozen dataclass$"):
        EXECUTORS.register(ExecutorSpec("x", Mutable, lambda o, w, c: None))
    with pytest.raises(BenchError, match=r"^executor 'local' is already registered"):
        EXECUTORS.register(ExecutorSpec("local", Fine, lambda o, w, c: None))
    with pytest.raises(BenchError, match=r"^--executor local: unknown options hosts \(known: workers\)$"):
        ExecutorConfig("local", {"hosts": 2})
    assert "x" not in EXECUTORS and EXECUTORS.names()[:3] == ["local", "ray", "slurm"]


SPECS = {"attacks": AttackSpec, "defences": DefenceSpec, "datasets": DatasetSpec, "models": ModelSpec, "corruptions": CorruptionSpec}
ALL = [(kind, name) for kind, reg in REGISTRIES.items() for name in reg.names()]


@pytest.mark.parametrize("kind, name", ALL, ids=[f"{k}:{n}" for k, n in ALL])
def test_every_entry_fills_its_spec(kind: str, name: str) -> None:
    entry = REGISTRIES[kind].get(name)
    assert type(entry) is SPECS[kind]
    p = entry.params()
    if kind == "attacks":
        assert entry.family in FAMILIES
        assert entry.cost is not None and entry.cost(p) > 0, "built-in attacks declare their cost"
        assert isinstance(bench.attacks.label(name, p), str) and bench.attacks.label(name, p)
        assert entry.eot is None or (isinstance(entry.eot(p), int) and entry.eot(p) >= 1)
    elif kind == "defences":
        assert entry.selection in ("robust", "clean")
        assert entry.train_cost is not None and entry.train_cost(p) >= 3, "built-in defences declare their cost"
        assert all(isinstance(v, entry.params) for v in entry.presets.values())
        assert entry.shared_start is None or callable(entry.shared_start)
    elif kind == "datasets":
        assert entry.info is None or isinstance(entry.info, DatasetInfo) or callable(entry.info)
        if isinstance(entry.info, DatasetInfo):
            assert entry.info.name == name and len(entry.info.mean) == len(entry.info.std) == entry.info.shape[0]
        if name != "synthetic":  # synthetic's sizes are its params; the estimate uses the defaults as before
            assert entry.sizes is not None and min(entry.sizes) > 0
    elif kind == "corruptions":  # one image at each severity: its shape, [0, 1], and the same seed the same image
        assert entry.family in CORRUPTION_FAMILIES
        x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0))
        for severity in range(1, 6):
            out = entry.fn(x.clone(), severity, [7])
            assert out.shape == x.shape and float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6
            assert torch.equal(out, entry.fn(x.clone(), severity, [7]))
    else:
        assert hasattr(p, "normalize")


def test_the_corruption_example_is_a_column_of_a_suite(tmp_path: Path) -> None:
    """bench/data/README.md's second example, as a suite's plug-in: its column is the model's verdicts on the dimmed images."""
    (tmp_path / "my_corruption.py").write_text(example("dataset", 1))
    text = MINIMAL_SUITE.replace("attacks: [fgsm]", "attacks: [fgsm, {corruption: {name: dim, severity: 5}}]")
    suite = write_suite(tmp_path / "s.yaml", text + "plugins: [my_corruption.py]\n")
    try:
        assert main(["run", str(suite), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--quiet"]) == 0
        from bench.api.trained import trained_models
        from bench.engine import entries
        from bench.engine.store import Store
        from bench.plan.expand import expand
        from bench.plan.kinds import EVAL
        from bench.suite.load import load_suite

        plan = expand(load_suite(suite))
        job = next(j for j in plan.eval_jobs if j.group == "corruption")
        assert (job.attack.name, job.attack.severity, job.attack.source, job.column) == ("dim", 5, "generated", "dim s5")
        (m,) = trained_models(suite, cache_dir=tmp_path / "c", device="cpu")
        dimmed = (m.x * 255 * 0.5).round() / 255  # rounded to uint8 as the evaluated images are
        with torch.no_grad():
            correct = (m.model(dimmed).argmax(1) == m.y).numpy()
        assert (entries.read_flags(Store(tmp_path / "c"), EVAL, job.key)["robust"].astype(bool) == correct).all()
    finally:
        CORRUPTIONS.unregister("dim")
        sys.modules.pop(next((k for k in sys.modules if k.startswith("bench_plugin_my_corruption")), ""), None)
