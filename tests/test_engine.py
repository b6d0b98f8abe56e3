"""The engine's promises: damaged cache entries are reported and recomputed, never used; N runners on
one cache run every task once; tasks run in a fresh process from plain data; failures leave a
traceback and nothing cached; `bench report` never replaces results with emptier ones."""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.commands.cli import main
from bench.core.files import sha256_file
from bench.engine.store import ENTRY, Store
from bench.engine.worker import run_ref
from bench.plan.expand import expand
from bench.suite.load import load_suite
from tests.conftest import ROOT, SUITES, write_suite

SUITE = """\
name: engine
dataset: {synthetic: {num_classes: 4, size: 12, n_train: 256, n_test: 64}}
model: {tiny_cnn: {width: 8}}
threat: {norm: Linf, eps: 24/255}
train: {epochs: 2, batch_size: 32, schedule: {milestones: [1]}, val_fraction: 0.125, val_attack: {steps: 2}}
defences: [{pgd_at: {steps: 2}}]
wa: [none, swa]
attacks: [fgsm, {pgd: {steps: 3}}]
eval: {n_examples: 64, batch_size: 32}
analysis: {rows: [pgd_at], n_images: 16, heatmap_images: 4, attack_steps: 2}
"""
METRICS = ["display_name", "attack", "n", "robust_acc", "clean_acc"]


def cli(*args: str) -> int:
    return main([*args])


def run_engine(suite: Path, cache: Path, results: Path) -> int:
    return cli("run", str(suite), "--cache-dir", str(cache), "--results-dir", str(results), "--device", "cpu", "--quiet")


def metrics(results: Path, name: str = "engine") -> pd.DataFrame:
    return pd.read_csv(results / name / "results.csv")[METRICS]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("engine")
    suite = write_suite(base / "engine.yaml", SUITE)
    assert run_engine(suite, base / "cache", base / "results") == 0
    return {"suite": suite, "cache": base / "cache", "results": base / "results", "base": base}


def copy_cache(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def cache_files(cache: Path) -> list[Path]:
    return sorted(p for kind in ("train", "eval", "sanity", "analysis") for p in (cache / kind).rglob("*") if p.is_file())


def truncate_and_pad(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\x00garbage\xff" * 4)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


CORRUPTIONS = {"truncate": truncate_and_pad, "flip": flip_byte, "delete": Path.unlink}
# one file of every kind in the cache, each damaged in one of three ways
TARGETS = [
    ("train", ENTRY, "truncate"),
    ("train", "manifest.json", "flip"),
    ("train", "log.jsonl", "truncate"),
    ("train", "weights/raw/best_val.pt", "flip"),
    ("train", "weights/swa-*/last.pt", "delete"),
    ("eval", "flags.npz", "truncate"),
    ("eval", "metrics.json", "delete"),
    ("sanity", "checks.json", "flip"),
    ("analysis", "arrays.npz", "flip"),
]


@pytest.mark.parametrize("kind, pattern, how", TARGETS, ids=[f"{k}/{p}:{h}" for k, p, h in TARGETS])
def test_a_damaged_entry_is_reported_in_one_line_and_recomputed(finished, tmp_path, capsys, kind, pattern, how) -> None:
    cache = copy_cache(finished["cache"], tmp_path / "cache")
    target = sorted((cache / kind).glob(f"*/{pattern}"))[0]
    CORRUPTIONS[how](target)
    capsys.readouterr()
    assert run_engine(finished["suite"], cache, tmp_path / "r") == 0
    err = capsys.readouterr().err
    damaged = [line for line in err.splitlines() if "is damaged" in line]
    assert len(damaged) == 1 and f"{kind}/" in damaged[0] and "Traceback" not in err
    pd.testing.assert_frame_equal(metrics(tmp_path / "r"), metrics(finished["results"]))
    store = Store(cache)
    assert all(store.problem(k, key) is None for k, key in store.entries())


def test_every_file_cut_in_half_and_padded_still_gives_the_same_leaderboard(finished, tmp_path, capsys) -> None:
    cache = copy_cache(finished["cache"], tmp_path / "cache")
    files = cache_files(cache)
    for path in files:
        truncate_and_pad(path)
    assert run_engine(finished["suite"], cache, tmp_path / "r") == 0
    err = capsys.readouterr().err
    assert err.count("is damaged") == len(list(Store(finished["cache"]).entries())) and "Traceback" not in err
    pd.testing.assert_frame_equal(metrics(tmp_path / "r"), metrics(finished["results"]))


def test_a_code_running_pickle_with_matching_checksums_is_refused(finished, tmp_path, capsys) -> None:
    """A hand-edited entry: the .pt replaced by a pickle that runs code, ENTRY updated to match."""
    cache = copy_cache(finished["cache"], tmp_path / "cache")
    sentinel = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    target = sorted((cache / "train").glob("*/weights/raw/best_val.pt"))[0]
    target.write_bytes(pickle.dumps(Exploit()))
    entry_file = target.parents[2] / ENTRY
    entry = json.loads(entry_file.read_text())
    entry["files"]["weights/raw/best_val.pt"] = sha256_file(target)
    entry_file.write_text(json.dumps(entry))
    assert run_engine(finished["suite"], cache, tmp_path / "r") == 0
    assert "not a plain weights file" in capsys.readouterr().err
    assert not sentinel.exists()
    pd.testing.assert_frame_equal(metrics(tmp_path / "r"), metrics(finished["results"]))


def test_a_finished_rerun_reads_no_evaluation_unless_something_changed(finished, tmp_path, monkeypatch) -> None:
    """bench/api/rendered.py: the results of a finished suite are left as they are without reading its
    evaluations again; an edited results file or a recomputed entry brings the full collect back."""
    import bench.api.run as api

    cache, results = copy_cache(finished["cache"], tmp_path / "cache"), tmp_path / "r"
    assert run_engine(finished["suite"], cache, results) == 0
    written = (results / "engine" / "results.json").read_text()
    calls: list[int] = []
    real = api.collect
    monkeypatch.setattr(api, "collect", lambda *a: calls.append(1) or real(*a))
    assert run_engine(finished["suite"], cache, results) == 0 and calls == []
    (results / "engine" / "results.json").write_text("[]\n")  # edited by hand: rendered again
    assert run_engine(finished["suite"], cache, results) == 0 and calls == [1]
    assert (results / "engine" / "results.json").read_text() == written
    assert run_engine(finished["suite"], cache, results) == 0 and calls == [1]
    flip_byte(min((cache / "eval").glob("*/flags.npz")))  # damaged: recomputed, so collected again
    assert run_engine(finished["suite"], cache, results) == 0 and calls == [1, 1]
    pd.testing.assert_frame_equal(metrics(results), metrics(finished["results"]))


def test_cache_verify_gc_ls_show(finished, tmp_path, capsys) -> None:
    cache = copy_cache(finished["cache"], tmp_path / "cache")
    n = len(list(Store(cache).entries()))
    assert cli("cache", "verify", "--cache-dir", str(cache)) == 0
    assert f"{n} entries checked, 0 damaged" in capsys.readouterr().out
    flip_byte(sorted((cache / "eval").glob("*/flags.npz"))[0])
    (cache / "tmp" / "123-abcd-eval-x@elsewhere").mkdir(parents=True)  # an abandoned write
    assert cli("cache", "verify", "--cache-dir", str(cache)) == 1
    out = capsys.readouterr().out
    assert out.count("DAMAGED eval/") == 1 and "sha256 mismatch" in out
    assert cli("cache", "gc", "--cache-dir", str(cache)) == 0
    assert "1 damaged entries, 1 unfinished writes" in capsys.readouterr().out
    assert cli("cache", "verify", "--cache-dir", str(cache)) == 0
    assert cli("cache", "ls", "--cache-dir", str(cache)) == 0
    listing = capsys.readouterr().out
    assert f"{n - 1} entries" in listing and "pgd_at seed=0" in listing
    key = next(k for kind, k in Store(cache).entries() if kind == "train")
    assert cli("cache", "show", key[:10], "--cache-dir", str(cache)) == 0
    shown = capsys.readouterr().out
    assert "integrity: ok" in shown and "weights/raw/best_val.pt" in shown
    assert cli("cache", "show", "zzz", "--cache-dir", str(cache)) == 2


def _concurrent(n: int, suite: Path, cache: Path, results: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "bench", "run", str(suite), "--cache-dir", str(cache), "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*cmd, "--results-dir", str(results / str(i))], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(n)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errs
    return [json.loads((results / str(i) / "engine" / "run.json").read_text()) for i in range(n)]


@pytest.mark.parametrize("n", [2, 3])
def test_concurrent_runners_run_each_task_once(finished, tmp_path, n) -> None:
    runs = _concurrent(n, finished["suite"], tmp_path / "cache", tmp_path / "r")
    ran = sum(r["trained"] + r["evaluated"] + r["checked"] + r["analyzed"] for r in runs)
    assert ran == runs[0]["planned"]  # every task exactly once across the runners
    assert all(r["failed"] == 0 for r in runs)
    for i in range(n):
        pd.testing.assert_frame_equal(metrics(tmp_path / "r" / str(i)), metrics(finished["results"]))


def test_a_task_runs_in_a_fresh_process_from_plain_data(finished, tmp_path) -> None:
    plan = expand(load_suite(finished["suite"]))
    task = plan.train_jobs[0]
    ref = task.suite
    code = (
        "import bench, torch; from bench.engine.worker import run_ref; from bench.plan.tasks import SuiteRef;"
        f"run_ref(SuiteRef({ref.path!r}, {ref.digest!r}, None), {task.key!r}, {str(tmp_path / 'c')!r}, torch.device('cpu'))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
    store = Store(tmp_path / "c")
    assert store.has("train", task.key) and store.problem("train", task.key) is None
    for name in ("weights/raw/last.pt", "weights/raw/best_val.pt"):
        a = store.load_weights("train", task.key, name, torch.device("cpu"))
        b = Store(finished["cache"]).load_weights("train", task.key, name, torch.device("cpu"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    pickle.loads(pickle.dumps(plan.eval_jobs[0]))  # tasks are plain frozen data
    edited = write_suite(tmp_path / "edited.yaml", SUITE)
    stale = type(ref)(str(edited), ref.digest[::-1], None)
    with pytest.raises(Exception, match="changed since its tasks were planned"):
        run_ref(stale, task.key, tmp_path / "c", torch.device("cpu"))


def test_failed_task_leaves_a_traceback_log_and_debug_reraises(tmp_path, capsys) -> None:
    plugin = write_suite(
        tmp_path / "broken_defence.py",
        """
from dataclasses import dataclass
from bench.registry import DEFENCES

@dataclass(frozen=True)
class P:
    pass

@DEFENCES.register("broken_for_test", params=P, version=1)
def broken_for_test(model, x, y, p, ctx):
    \"\"\"Raises (tests).\"\"\"
    return model.no_such_attribute
""",
    )
    text = SUITE.replace("defences: [{pgd_at: {steps: 2}}]", "defences: [broken_for_test, {pgd_at: {steps: 2}}]")
    text = text.replace("analysis: {rows: [pgd_at],", "analysis: {rows: [],") + f"plugins: [{plugin.name}]\n"
    suite = write_suite(tmp_path / "s.yaml", text)
    assert run_engine(suite, tmp_path / "c", tmp_path / "r") == 1
    err = capsys.readouterr().err
    log = next((tmp_path / "r" / "engine" / "logs").glob("train-*.log"))
    assert f"traceback: {log}" in err
    trace = log.read_text()
    assert "Traceback" in trace and "broken_defence.py" in trace and "no_such_attribute" in trace
    assert len(list((tmp_path / "c" / "train").iterdir())) == 1  # pgd_at trained, nothing cached for the failure
    with pytest.raises(AttributeError):
        cli("run", str(suite), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--quiet", "--debug")
    from bench.registry import DEFENCES

    DEFENCES.unregister("broken_for_test")


def test_plugin_module_names_are_stable_across_processes(tmp_path) -> None:
    plugin = write_suite(tmp_path / "stable_plugin.py", "X = 1\n")
    text = SUITE + f"plugins: [{plugin.name}]\n"
    suite = write_suite(tmp_path / "s.yaml", text)
    code = f"import bench, sys; bench.load_suite({str(suite)!r}); print([m for m in sys.modules if 'stable_plugin' in m][0])"
    names = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(names) == 1 and names.pop().startswith("bench_plugin_stable_plugin_")


def test_report_on_an_empty_cache_leaves_committed_results_byte_identical(tmp_path, capsys) -> None:
    results = tmp_path / "results"
    import shutil

    shutil.copytree(ROOT / "results" / "quickstart", results / "quickstart")
    before = {p: p.read_bytes() for p in (results / "quickstart").rglob("*") if p.is_file()}
    code = cli("report", str(SUITES / "quickstart.yaml"), "--cache-dir", str(tmp_path / "empty"), "--results-dir", str(results))
    err = capsys.readouterr().err
    assert code == 1 and "nothing cached for suite quickstart" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in (results / "quickstart").rglob("*") if p.is_file()} == before


def test_report_refuses_to_replace_results_with_fewer(finished, tmp_path, capsys) -> None:
    cache = copy_cache(finished["cache"], tmp_path / "cache")
    import shutil

    shutil.copytree(finished["results"], tmp_path / "r")
    for entry in sorted((cache / "eval").iterdir())[:2]:
        shutil.rmtree(entry)
    before = (tmp_path / "r" / "engine" / "results.json").read_bytes()
    assert cli("report", str(finished["suite"]), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r")) == 1
    assert "not overwriting" in capsys.readouterr().err
    assert (tmp_path / "r" / "engine" / "results.json").read_bytes() == before
    assert cli("report", str(finished["suite"]), "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r"), "--force") == 0


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_a_non_positive_limit_is_a_one_line_error(finished, tmp_path, capsys, limit) -> None:
    for command in ("run", "validate", "report"):
        code = cli(command, str(finished["suite"]), "--cache-dir", str(tmp_path / "c"), f"--limit={limit}")
        err = capsys.readouterr().err
        assert code == 2 and "--limit: must be a positive number" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def _module_imports(path: Path) -> set[str]:
    """Modules of this project a file imports, at module level or lazily inside a function."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("bench", "defenses"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in ("bench", "defenses"))
    return found


def test_no_import_loops() -> None:
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for d in ("bench", "defenses") for p in (ROOT / d).rglob("*.py")}
    graph = {m: {i for i in _module_imports(p) if i in files and i != m} for m, p in files.items()}
    # a package imports its submodules to register them; that is not a loop
    graph = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import loop: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
