"""Your own model: bench.evaluate, suite ``checkpoints:`` rows and ``bench eval`` (synthetic data, tiny model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bench
from bench.commands.cli import main
from bench.core.errors import BenchError, ConfigError
from bench.data import load_dataset
from bench.data.synthetic import SyntheticParams
from bench.engine import worker as engine
from bench.engine.store import Store
from bench.engine.worker import run_ref
from bench.evaluation.checkpoints import checkpoint_digest
from bench.plan.expand import expand
from bench.suite.load import load_suite

ATTACKS = ["fgsm", {"pgd": {"steps": 3}}]
EVAL = {"dataset": "synthetic", "attacks": ATTACKS, "eps": "24/255", "n_examples": 64, "batch_size": 32, "device": "cpu", "progress": False}
SUITE = """\
name: own
dataset: synthetic
model: tiny_cnn
threat: {{norm: Linf, eps: 24/255}}
train: {{epochs: 1, batch_size: 64, val_fraction: 0.125, val_attack: {{steps: 2}}}}
defences: {defences}
attacks: [fgsm, {{pgd: {{steps: 3}}}}]
eval: {{n_examples: 64, batch_size: 32}}
checkpoints:
  - {{name: mine, model: tiny_cnn, path: {path}}}
"""


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A tiny_cnn trained for 60 steps on the synthetic stripes: right on most examples, not robust on all."""
    torch.manual_seed(0)
    data = load_dataset("synthetic", SyntheticParams())
    net = bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = data.train_x.float() / 255, data.train_y
    for step in range(60):
        i = torch.randint(0, len(y), (64,))
        opt.zero_grad()
        F.cross_entropy(net(x[i]), y[i]).backward()
        opt.step()
    return net.eval()


def suite_file(tmp_path: Path, model: nn.Module, defences: str = "[]", name: str = "mine.pt") -> Path:
    torch.save(model.state_dict(), tmp_path / name)
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(defences=defences, path=name))
    return path


def test_evaluate_gives_the_suite_rows_flags_and_shares_their_cache(model: nn.Module, tmp_path: Path) -> None:
    suite = suite_file(tmp_path, model)
    summary = bench.run_suite(suite, cache_dir=tmp_path / "a", results_dir=tmp_path / "r", device="cpu", progress=False)
    assert summary.trained == 0 and summary.evaluated == 2 and not summary.failures
    alone = bench.evaluate(model, cache_dir=tmp_path / "b", name="mine", **EVAL)  # computed on its own
    assert alone.computed == 3  # two attacks and the sanity checks
    shared = bench.evaluate(model, cache_dir=tmp_path / "a", name="mine", **EVAL)  # the suite's cache
    assert shared.computed == 0  # the same weights and spec: the suite's entries
    pd.testing.assert_frame_equal(alone.flags, shared.flags)
    assert list(alone.flags.columns) == ["Clean", "FGSM", "PGD-3", "Worst case"]
    flags = alone.flags
    assert 0 < flags["Worst case"].sum() < flags["Clean"].sum() and len(flags) == 64  # a model worth attacking
    assert (flags["Worst case"] == (flags["FGSM"] & flags["PGD-3"])).all() and not (flags["PGD-3"] & ~flags["Clean"]).any()
    board = json.loads((tmp_path / "r" / "own" / "results.json").read_text())
    by_attack = {r["attack"]: r for r in board if r["display_name"] == "mine"}
    assert alone.rows.loc["Clean", "accuracy"] == pytest.approx(100 * flags["Clean"].mean()) == pytest.approx(100 * by_attack["FGSM"]["clean_acc"])
    for column in ("FGSM", "PGD-3", "Worst case"):
        row = alone.rows.loc[column]
        assert row["accuracy"] == pytest.approx(100 * by_attack[column]["robust_acc"]) == pytest.approx(100 * flags[column].mean())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((by_attack[column]["ci_low"], by_attack[column]["ci_high"]))
    assert alone.robust_accuracy == pytest.approx(flags["Worst case"].mean())
    assert "| Worst case |" in str(alone) and alone.tidy["display_name"].eq("mine").all()


def test_a_second_call_computes_nothing(model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = bench.evaluate(model, cache_dir=tmp_path, **{**EVAL, "n_examples": 32})
    entries = sorted(Store(tmp_path).entries())
    assert first.computed == 3 and len(entries) == 3
    def boom(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(engine, "robust_flags", boom)
    monkeypatch.setattr(engine, "sanity_checks", boom)
    again = bench.evaluate(model, cache_dir=tmp_path, **{**EVAL, "n_examples": 32})
    assert again.computed == 0 and sorted(Store(tmp_path).entries()) == entries
    pd.testing.assert_frame_equal(first.rows, again.rows)
    with pytest.raises(AssertionError, match="computed again"):  # other weights are another key
        bench.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(144, 4)), cache_dir=tmp_path, **{**EVAL, "n_examples": 32})


def test_any_module_with_normalize_and_one_line_argument_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 4))
    kw = {**EVAL, "n_examples": 16, "attacks": ["fgsm"], "sanity": False, "cache_dir": tmp_path}
    result = bench.evaluate(net, normalize=(0.5, 0.25), **kw)
    assert result.computed == 1 and list(result.rows.index) == ["Clean", "FGSM", "Worst case"]
    assert result.tidy["model"].eq("Sequential").all()
    assert bench.evaluate(net, normalize=(0.5, 0.25), **kw).computed == 0
    assert bench.evaluate(net, **kw).computed == 1  # without the normalisation: another model
    cases = [
        ({"attacks": [{"pgd": {"stpes": 3}}]}, "bench.evaluate: attacks[0].pgd.stpes: unknown key (did you mean 'steps'?)"),
        ({"eps": 300}, "bench.evaluate: eps: must be in (0, 1] for Linf"),
        ({"norm": "l3"}, "bench.evaluate: norm: expected Linf, L2 or L1"),
        ({"dataset": "fashion-mnistt"}, "bench.evaluate: dataset: unknown dataset 'fashion-mnistt' (did you mean"),
        ({"n_examples": 0}, "bench.evaluate: eval.n_examples: must be at least 1"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError) as e:
            bench.evaluate(net, **{**kw, **change})
        assert str(e.value).startswith(message) and "\n" not in str(e.value)
    with pytest.raises(BenchError, match=r"returns \(2, 3\) for 2 synthetic images; expected logits of shape \(2, 4\)"):
        bench.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(144, 3)), **kw)
    with pytest.raises(BenchError, match=r"fails on synthetic inputs of shape \(2, 1, 12, 12\)"):
        bench.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(100, 4)), **kw)


def test_suite_checkpoint_row_next_to_trained_rows(model: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "ckpt").mkdir()
    suite = suite_file(tmp_path / "ckpt", model, defences="[standard]")
    suite.write_text(suite.read_text() + "analysis: {rows: [mine], n_images: 8, heatmap_images: 2, attack_steps: 2}\n")
    args = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--quiet"]
    assert main(["run", str(suite), *args]) == 0
    board = (tmp_path / "r" / "own" / "leaderboard.md").read_text()
    assert "| standard " in board and "| mine " in board
    analysed = (tmp_path / "r" / "own" / "analysis" / "summary.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in analysed[1:]] == ["mine"]  # checkpoint rows can be analysed
    assert (tmp_path / "r" / "own" / "analysis" / "heatmap.png").is_file()
    rows = [r for r in json.loads((tmp_path / "r" / "own" / "results.json").read_text()) if r["display_name"] == "mine"]
    assert len(rows) == 3 and {r["weights"] for r in rows} == {"raw:checkpoint"} and rows[0]["train_seconds"] is None
    # a worker re-plans from the suite reference and the key, and loads the file itself
    plan = expand(load_suite(suite))
    task = next(t for t in plan.eval_jobs if t.display == "mine")
    Store(tmp_path / "c").discard("eval", task.key)
    assert run_ref(task.suite, task.key, tmp_path / "c", torch.device("cpu")) is True
    # other weights in the same file: its evaluations are planned again, the trained row's are not
    torch.save({k: v + 0.01 for k, v in model.state_dict().items()}, tmp_path / "ckpt" / "mine.pt")
    capsys.readouterr()
    assert main(["validate", str(suite), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if "eval mine" in line] == ["[miss]", "[miss]"]
    assert [line.split()[0] for line in out.splitlines() if "eval standard" in line] == ["[hit", "[hit"]
    with pytest.raises(BenchError, match="the suite changed since its tasks were planned"):  # a worker of the old plan
        run_ref(task.suite, task.key, tmp_path / "c", torch.device("cpu"))


def test_checkpoint_layouts_name_the_same_weights(model: nn.Module, tmp_path: Path) -> None:
    suite = load_suite(suite_file(tmp_path, model))
    ref, dataset = suite.checkpoints[0].model, suite.dataset
    layouts = {
        "net.pt": model.net.state_dict(),
        "wrapped.pt": {"state_dict": model.state_dict(), "epoch": 3},
        "model.pt": {"model": model.state_dict()},
        "parallel.pt": {f"module.{k}": v for k, v in model.state_dict().items()},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        assert checkpoint_digest(tmp_path / name, ref, dataset, name) == suite.checkpoints[0].digest, name


def _bad(tmp_path: Path, model: nn.Module) -> dict[str, tuple[object, str]]:
    wide = bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12), width=16)
    three = bench.build_model("tiny_cnn", num_classes=3, shape=(1, 12, 12))
    marker = tmp_path / "pwned"

    class Code:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return {
        "wide.pt": (wide.state_dict(), r"net\.0\.weight has shape \(16, 1, 3, 3\), tiny_cnn on synthetic \(1, 12, 12\) needs \(8, 1, 3, 3\)"),
        "three.pt": (three.state_dict(), r"has 3 classes \(net\.8\.weight \(3, 16\)\), the dataset synthetic has 4"),
        "code.pt": ({"w": Code()}, r"is not a weights-only checkpoint, refused by torch.load\(weights_only=True\) \(it would import"),
        "list.pt": ([torch.zeros(1)], r"holds list, not a state_dict"),
        "other.pt": ({"fc.weight": torch.zeros(4, 3)}, r"its tensors do not fit tiny_cnn: missing"),
        "text.pt": (None, r"is not a readable torch checkpoint"),
        "absent.pt": (None, r"file not found: .*absent\.pt"),
    }


def test_bad_checkpoints_are_one_line_at_validate(model: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    suite = suite_file(tmp_path, model)
    for name, (obj, message) in _bad(tmp_path, model).items():
        if name == "text.pt":
            (tmp_path / name).write_text("not a checkpoint")
        elif obj is not None:
            torch.save(obj, tmp_path / name)
        suite.write_text(SUITE.format(defences="[]", path=name))
        capsys.readouterr()
        assert main(["validate", str(suite), "--cache-dir", str(tmp_path / "c")]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{suite}: checkpoints[0].path: " in err, err
        assert re.search(message, err), (name, err)
    assert not (tmp_path / "pwned").exists()  # the pickle's code never ran
    assert not (tmp_path / "c").exists()
    rows = {
        "[{name: standard, model: tiny_cnn, path: mine.pt}]": "checkpoints[0].name: 'standard' is already a row",
        "[{name: x, model: tiny_cnnn, path: mine.pt}]": "checkpoints[0].model: unknown model 'tiny_cnnn' (did you mean",
        "[{name: x, model: tiny_cnn, file: mine.pt}]": "checkpoints[0].file: unknown key; allowed: name, model, path",
        "[{name: x, model: tiny_cnn}]": "checkpoints[0].path: missing",
        "{name: x}": "checkpoints: expected a list",
    }
    base = SUITE.split("checkpoints:")[0].format(defences="[standard]")
    for text, message in rows.items():
        suite.write_text(base + f"checkpoints: {text}\n")
        with pytest.raises(ConfigError) as e:
            load_suite(suite)
        assert f"{suite}: {message}" in str(e.value)


def test_bench_eval_command(model: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save(model.net.state_dict(), tmp_path / "net.pt")
    args = ["eval", str(tmp_path / "net.pt"), "--model", "tiny_cnn", "--dataset", "{synthetic: {}}", "--attack", "fgsm",
            "--attack", "{pgd: {steps: 3}}", "--eps", "24/255", "--n-examples", "64", "--batch-size", "32",
            "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "--quiet"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["column"] for r in out["rows"]] == ["Clean", "FGSM", "PGD-3", "Worst case"] and out["computed"] == 3
    reference = bench.evaluate(model, cache_dir=tmp_path / "c", name="net", **EVAL)  # the same weights: the same entries
    assert reference.computed == 0
    assert [r["accuracy"] for r in out["rows"]] == pytest.approx(list(reference.rows["accuracy"]))
    assert main([*args, "--flags", str(tmp_path / "flags.csv")]) == 0
    flags = pd.read_csv(tmp_path / "flags.csv", index_col="sample_id")
    assert list(flags.columns) == ["Clean", "FGSM", "PGD-3", "Worst case"] and flags.equals(reference.flags)
    table = capsys.readouterr().out
    assert table.startswith("net on synthetic, L∞ ε = 24/255, 64 test examples") and "| PGD-3 " in table and "(from the cache)" in table
    for name, (obj, message) in _bad(tmp_path, model).items():
        if obj is None or name == "code.pt":
            continue
        torch.save(obj, tmp_path / name)
        assert main(["eval", str(tmp_path / name), *args[2:]]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("bench: error: CHECKPOINT: ") and re.search(message, err)
    assert main(["eval", str(tmp_path / "net.pt"), *args[2:], "--attack", "{pgd: {stpes: 3}}"]) == 2
    assert "--attack[2].pgd.stpes: unknown key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "bench eval ckpt/mine.pt --model small_cnn --dataset fashion-mnist" in capsys.readouterr().out
