"""Corruption and external columns in a suite (#26): parsed strictly, keyed by what they depend on, evaluated per
sample by the engine, and shown as the leaderboard says: corruptions in their own group (mean, mCE), never in the
worst case; external adversarial examples in it. Checked against flags recomputed here from the models and images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import bench
from bench.commands.cli import main
from bench.core.errors import ConfigError
from bench.data.corruptions import corrupt
from bench.engine import entries
from bench.engine.store import Store
from bench.plan.expand import expand
from bench.plan.kinds import EVAL
from bench.report.corruptions import MCE
from bench.suite.load import load_suite
from tests.conftest import MINIMAL_SUITE, write_suite

SUITE = """\
name: columns
dataset: {synthetic: {num_classes: 4, size: 12, n_train: 256, n_test: 96}}
model: {tiny_cnn: {width: 8}}
threat: {norm: L1, eps: 2}
train: {epochs: 2, batch_size: 32, val_fraction: 0.125, val_attack: {steps: 2}}
defences: [standard, {pgd_at: {steps: 2}}]
attacks:
  - {corruption: {name: gaussian_noise, severity: [1, 3]}}
  - fgsm
  - {pgd: {steps: 3}}
  - {external: {path: advs.pt, name: mine}}
  - {corruption: {name: fog, severity: 2}}
eval: {batch_size: 64}
leaderboard: {mce_reference: standard}
"""
MISSING_IDS = 16  # the external file has no example for the last 16 test ids


def _split():
    """The suite's synthetic test split."""
    from bench.core.params import build
    from bench.data import load_dataset
    from bench.registry import DATASETS

    params = build(DATASETS.get("synthetic").params, {"num_classes": 4, "size": 12, "n_train": 256, "n_test": 96}, "t")
    splits = load_dataset("synthetic", params)
    return splits.test_x, splits.test_y


def external_file(folder: Path, name: str = "advs.pt") -> Path:
    """Test images 0..79 moved by an L1 distance of 1.5 (within eps 2); none for the last 16."""
    x = _split()[0][: 96 - MISSING_IDS].float() / 255
    g = torch.Generator().manual_seed(0)
    step = torch.randn(x.shape, generator=g)
    step = 1.5 * step / step.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
    x_adv = (x + step).clamp(0, 1)
    path = folder / name
    torch.save({"ids": torch.arange(len(x)), "x_adv": x_adv}, path)
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    """The suite run once: its folder, cache, results and plan."""
    root = tmp_path_factory.mktemp("columns")
    external_file(root)
    suite_path = write_suite(root / "suite.yaml", SUITE)
    cache, results = root / "cache", root / "results"
    assert main(run_args(suite_path, cache, results)) == 0
    plan = expand(load_suite(suite_path))
    records = json.loads((results / "columns" / "results.json").read_text())
    return {
        "root": root,
        "suite": suite_path,
        "cache": cache,
        "out": results / "columns",
        "plan": plan,
        "records": records,
    }


def _flags(ran: dict, display: str, column: str) -> dict[str, np.ndarray]:
    job = next(j for j in ran["plan"].eval_jobs if j.display == display and j.column == column)
    return entries.read_flags(Store(ran["cache"]), EVAL, job.key)


def test_the_columns_are_planned_in_their_groups(ran):
    plan = ran["plan"]
    assert plan.columns == ["FGSM", "PGD-3"] and plan.worst_columns == ["FGSM", "PGD-3", "mine"]
    assert [label for _, label in plan.corruption_columns] == ["gaussian_noise s1", "gaussian_noise s3", "fog s2"]
    groups = {j.column: j.group for j in plan.eval_jobs}
    assert groups == {"FGSM": "attack", "PGD-3": "attack", "mine": "external", "gaussian_noise s1": "corruption",
                      "gaussian_noise s3": "corruption", "fog s2": "corruption"}  # fmt: skip
    families = {r["attack"]: r["family"] for r in ran["records"]}
    assert (
        families["fog s2"] == "corruption"
        and families["mine"] == "external"
        and families["Corruption mean"] == "corruption"
    )


def test_corruption_flags_are_the_models_verdicts_on_the_corrupted_images(ran):
    models = {m.row: m for m in bench.trained_models(ran["suite"], cache_dir=ran["cache"], device="cpu")}
    assert set(models) == {"standard", "pgd_at"}
    m = models["pgd_at"]
    for name, severity in (("gaussian_noise", 3), ("fog", 2)):
        images = corrupt(
            name, m.x, severity, m.ids
        )  # float in, float out: rounded as the engine's uint8 images are not
        uint8 = corrupt(name, (m.x * 255).round().to(torch.uint8), severity, m.ids).float() / 255
        with torch.no_grad():
            correct = (m.model(uint8).argmax(1) == m.y).numpy()
        flags = _flags(ran, "pgd_at", f"{name} s{severity}")
        assert np.array_equal(flags["sample_id"], m.ids.numpy())
        assert np.array_equal(flags["robust"].astype(bool), correct)  # every image counted, clean or not
        assert images.shape == m.x.shape


def test_external_flags_count_missing_ids_as_their_clean_verdict(ran):
    m = next(m for m in bench.trained_models(ran["suite"], cache_dir=ran["cache"], device="cpu") if m.row == "standard")
    saved = torch.load(ran["root"] / "advs.pt", weights_only=True)
    with torch.no_grad():
        clean = (m.model(m.x).argmax(1) == m.y).numpy()
        adv = (m.model(saved["x_adv"]).argmax(1) == m.y[: len(saved["ids"])]).numpy()
    expected = clean.copy()
    expected[: len(adv)] &= adv
    flags = _flags(ran, "standard", "mine")
    assert np.array_equal(flags["robust"].astype(bool), expected)
    metrics = entries.read_metrics(
        Store(ran["cache"]), EVAL, next(j.key for j in ran["plan"].eval_jobs if j.column == "mine")
    )
    assert metrics["external_missing"] == MISSING_IDS and metrics["external_unused"] == 0
    assert (
        f"no adversarial example for {MISSING_IDS} evaluated test id(s)" in (ran["out"] / "leaderboard.md").read_text()
    )


def test_worst_case_is_over_attacks_and_external_never_corruptions(ran):
    for display in ("standard", "pgd_at"):
        worst = next(r for r in ran["records"] if r["display_name"] == display and r["attack"] == "Worst case")
        over = np.logical_and.reduce(
            [_flags(ran, display, c)["robust"].astype(bool) for c in ("FGSM", "PGD-3", "mine")]
        )
        with_fog = over & _flags(ran, display, "fog s2")["robust"].astype(bool)
        assert worst["robust_acc"] == pytest.approx(over.mean())
        assert with_fog.mean() < over.mean()  # fog would have lowered it: it is not in it


def test_corruption_mean_and_mce_are_computed_from_the_columns(ran):
    acc = {(r["display_name"], r["attack"]): r["robust_acc"] for r in ran["records"]}
    columns = ["gaussian_noise s1", "gaussian_noise s3", "fog s2"]
    for display in ("standard", "pgd_at"):
        assert acc[(display, "Corruption mean")] == pytest.approx(np.mean([acc[(display, c)] for c in columns]))
    err = {k: 1 - v for k, v in acc.items()}
    ce_noise = sum(err[("pgd_at", c)] for c in columns[:2]) / sum(err[("standard", c)] for c in columns[:2])
    ce_fog = err[("pgd_at", "fog s2")] / err[("standard", "fog s2")]
    board = (ran["out"] / "leaderboard.md").read_text().splitlines()
    header = next(line for line in board if line.startswith("|") and "Defence" in line)
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[cells.index("Worst case") + 1 :] == ["gaussian_noise", "fog", "Corruption mean", MCE]
    rows = {
        c[1]: c
        for c in (
            [x.strip() for x in line.strip("|").split("|")]
            for line in board
            if line.startswith("|") and "---" not in line
        )
    }
    assert rows["pgd_at"][cells.index(MCE)] == f"{100 * (ce_noise + ce_fog) / 2:.1f}"
    assert rows["standard"][cells.index(MCE)] == "100.0"
    assert (
        rows["pgd_at"][cells.index("gaussian_noise")]
        == f"{100 * (acc[('pgd_at', columns[0])] + acc[('pgd_at', columns[1])]) / 2:.2f}"
    )
    detail = (ran["out"] / "corruptions.md").read_text()
    assert re.search(r"\| gaussian_noise\s+\|\s+1\s+\|", detail) and re.search(r"\| fog\s+\|\s+2\s+\|", detail)
    assert re.search(rf"\| \*\*mCE\*\*\s+\|\s+100.0\s+\|\s+{100 * (ce_noise + ce_fog) / 2:.1f}\s+\|", detail)
    assert 'id="corruptions"' in (ran["out"] / "index.html").read_text()


def test_a_rerun_computes_nothing_and_keys_follow_what_columns_depend_on(ran, tmp_path):
    store = Store(ran["cache"])
    assert all(store.has(t.kind, t.key) for t in ran["plan"].tasks)
    other = expand(load_suite(ran["suite"], ["eval.batch_size=32", "eval.precision=bf16"]))  # how attacks run
    keys = lambda plan, group: {(j.display, j.column): j.key for j in plan.eval_jobs if j.group == group}  # noqa: E731
    assert keys(other, "corruption") == keys(ran["plan"], "corruption") and keys(other, "external") == keys(
        ran["plan"], "external"
    )
    assert not set(keys(other, "attack").values()) & set(keys(ran["plan"], "attack").values())
    copy = tmp_path / "suite.yaml"
    copy.write_text(SUITE)
    (tmp_path / "advs.pt").write_bytes((ran["root"] / "advs.pt").read_bytes())
    assert keys(expand(load_suite(copy)), "external") == keys(ran["plan"], "external")  # keyed by content, not place
    torch.save({"ids": torch.arange(3), "x_adv": torch.zeros(3, 1, 12, 12)}, tmp_path / "advs.pt")
    assert not set(keys(expand(load_suite(copy)), "external").values()) & set(keys(ran["plan"], "external").values())


def run_args(suite: Path, cache: Path, results: Path) -> list[str]:
    """``bench run`` of ``suite`` on the CPU, quietly."""
    return ["run", str(suite), "--cache-dir", str(cache), "--results-dir", str(results), "--device", "cpu", "--quiet"]


def _eval_entries(cache: Path) -> set[str]:
    return {p.name for p in (cache / "eval").iterdir()} if (cache / "eval").is_dir() else set()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: {"ids": torch.arange(4), "x_adv": x[:4] + 0.5}, "x_adv[0]: outside [0, 1]"),
        (
            lambda x: {
                "ids": torch.arange(4),
                "x_adv": torch.where(torch.arange(4).view(-1, 1, 1, 1) == 2, 1 - x[:4], x[:4]),
            },
            "x_adv[2]: outside the L1 ball of eps 2",
        ),
        (lambda x: x[:5], "5 images, expected 96"),
        (lambda x: {"ids": torch.arange(4), "adv": x[:4]}, "unknown key 'adv'"),
        (lambda x: {"ids": torch.tensor([0, 0]), "x_adv": x[:2]}, "ids[1]: test id 0 appears twice"),
    ],
)
def test_a_bad_external_file_is_one_line_and_nothing_is_cached(ran, tmp_path, capsys, make, message):
    x = _split()[0].float() / 255
    torch.save(make(x), tmp_path / "advs.pt")
    suite = write_suite(tmp_path / "suite.yaml", SUITE)
    before = _eval_entries(ran["cache"])
    code = main(run_args(suite, ran["cache"], tmp_path / "r"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert f"{suite}: attacks: external 'mine': advs.pt: " in err[0] and message in err[0]
    assert _eval_entries(ran["cache"]) == before  # not even the columns that could have run


def test_per_row_files_are_waited_for_then_evaluated(ran, tmp_path):
    text = SUITE.replace(
        "{external: {path: advs.pt, name: mine}}", '{external: {path: "adaptive/{row}-seed{seed}.pt", name: adaptive}}'
    )
    suite = write_suite(tmp_path / "suite.yaml", text)
    args = run_args(suite, ran["cache"], tmp_path / "r")
    assert main(args) == 0
    board = (tmp_path / "r" / "columns" / "leaderboard.md").read_text()
    assert (
        "External column `adaptive`: no file yet for 2 row(s): `adaptive/standard-seed0.pt` (standard, seed 0)" in board
    )
    assert not [
        r for r in json.loads((tmp_path / "r" / "columns" / "results.json").read_text()) if r["attack"] == "Worst case"
    ]
    for m in bench.trained_models(suite, cache_dir=ran["cache"], device="cpu"):
        x_adv = bench.attack("pgd", m.model, m.x, m.y, eps=m.threat.eps_text, norm=m.threat.norm, steps=5)
        torch.save({"ids": m.ids, "x_adv": x_adv}, m.external_file("adaptive"))
    assert sorted(p.name for p in (tmp_path / "adaptive").iterdir()) == ["pgd_at-seed0.pt", "standard-seed0.pt"]
    assert main(args) == 0
    records = json.loads((tmp_path / "r" / "columns" / "results.json").read_text())
    assert {r["display_name"] for r in records if r["attack"] == "Worst case"} == {"standard", "pgd_at"}
    assert "no file yet" not in (tmp_path / "r" / "columns" / "leaderboard.md").read_text()


@pytest.mark.parametrize(
    ("entry", "where", "message"),
    [
        ("{corruption: {name: fgo}}", "attacks[1].corruption.name", "unknown corruption 'fgo' (did you mean 'fog'?)"),
        ("{corruption: {name: fog, severity: 6}}", "attacks[1].corruption.severity", "expected a severity 1 to 5"),
        (
            "{corruption: {name: fog, source: released}}",
            "attacks[1].corruption.source",
            "released corruption files exist for cifar10, cifar100 only",
        ),
        ("{corruption: {name: speckle_noise}}", "attacks[1].corruption.name", "exists only in the released files"),
        (
            "{corruption: {name: fog, sevrity: 2}}",
            "attacks[1].corruption.sevrity",
            "unknown key (did you mean 'severity'?)",
        ),
        ("{external: {path: nowhere.pt}}", "attacks[1].external.path", "file not found"),
        ("{external: {path: 'a/{model}.pt'}}", "attacks[1].external.path", "only {row} and {seed} may be filled in"),
        ("{external: 3}", "attacks[1].external", "expected a file name or {path: advs.pt, name: ...}"),
    ],
)
def test_bad_entries_are_one_line_naming_the_field(tmp_path, entry, where, message):
    suite = write_suite(tmp_path / "s.yaml", MINIMAL_SUITE.replace("attacks: [fgsm]", f"attacks: [fgsm, {entry}]"))
    with pytest.raises(ConfigError) as info:
        load_suite(suite)
    assert (
        str(info.value).startswith(f"{suite}: {where}: ") and message in str(info.value) and "\n" not in str(info.value)
    )


def test_presets_defaults_and_checks_between_sections(tmp_path):
    common = write_suite(
        tmp_path / "a.yaml", MINIMAL_SUITE.replace("attacks: [fgsm]", "attacks: [fgsm, {corruption: common-15}]")
    )
    refs = load_suite(common).corruptions
    assert len(refs) == 75 and {r.source for r in refs} == {"generated"} and refs[0].label == "gaussian_noise s1"
    three = MINIMAL_SUITE.replace("attacks: [fgsm]", "attacks: [fgsm, {corruption: {preset: common-15, severity: 3}}]")
    assert [r.severity for r in load_suite(write_suite(tmp_path / "b.yaml", three)).corruptions] == [3] * 15
    cifar = MINIMAL_SUITE.replace("dataset: synthetic", "dataset: cifar10").replace(
        "attacks: [fgsm]", "attacks: [{corruption: fog}]"
    )
    assert {r.source for r in load_suite(write_suite(tmp_path / "c.yaml", cifar)).corruptions} == {"released"}
    no_columns = write_suite(tmp_path / "d.yaml", MINIMAL_SUITE + "leaderboard: {mce_reference: standard}\n")
    with pytest.raises(ConfigError, match=r"d.yaml: leaderboard.mce_reference: needs corruption columns"):
        load_suite(no_columns)
    unknown = write_suite(tmp_path / "e.yaml", common.read_text() + "leaderboard: {mce_reference: standrad}\n")
    with pytest.raises(
        ConfigError,
        match=r"e.yaml: leaderboard.mce_reference: no leaderboard row 'standrad' \(did you mean 'standard'\?\)",
    ):
        expand(load_suite(unknown))
    both = write_suite(
        tmp_path / "f.yaml",
        MINIMAL_SUITE.replace("attacks: [fgsm]", "attacks: [{corruption: fog}, fgsm, {corruption: fog}]"),
    )
    with pytest.raises(ConfigError, match=r"f.yaml: attacks\[2\].corruption: duplicate corruption column 'fog s1'"):
        load_suite(both)
    dup = write_suite(
        tmp_path / "g.yaml", MINIMAL_SUITE.replace("attacks: [fgsm]", "attacks: [{corruption: fog}, fgsm, fgsm]")
    )
    with pytest.raises(
        ConfigError, match=r"g.yaml: attacks\[2\]: duplicate entry 'fgsm'"
    ):  # positions in the suite's list
        load_suite(dup)


def test_released_files_are_evaluated_per_test_id(tmp_path):
    """CIFAR-10 and CIFAR-10-C written in their released layouts; an own model (checkpoints row) on fog severity 2."""
    from tests.test_vision_data import fake_cifar10

    *_, ty = fake_cifar10(tmp_path, n_test=6)
    rng = np.random.default_rng(1)
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    np.save(folder / "fog.npy", rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.asarray(ty, dtype=np.uint8), 5))
    model = bench.build_model("tiny_cnn", num_classes=10, shape=(3, 32, 32))
    torch.save(model.state_dict(), tmp_path / "mine.pt")
    suite = write_suite(
        tmp_path / "s.yaml",
        """\
name: released
dataset: cifar10
model: tiny_cnn
threat: {norm: Linf, eps: 8/255}
defences: []
checkpoints: [{name: mine, model: tiny_cnn, path: mine.pt}]
attacks: [fgsm, {corruption: {name: fog, severity: 2}}]
""",
    )
    args = [
        "--cache-dir",
        str(tmp_path / "cache"),
        "--results-dir",
        str(tmp_path / "r"),
        "--data-dir",
        str(tmp_path),
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(["run", str(suite), *args]) == 0
    plan = expand(load_suite(suite))
    job = next(j for j in plan.eval_jobs if j.group == "corruption")
    assert job.attack.source == "released"
    flags = entries.read_flags(Store(tmp_path / "cache"), EVAL, job.key)
    fog = np.load(folder / "fog.npy")[6:12].transpose(0, 3, 1, 2)  # severity 2: the second block of 6
    loaded = bench.build_model("tiny_cnn", num_classes=10, shape=(3, 32, 32))
    loaded.load_state_dict(torch.load(tmp_path / "mine.pt", weights_only=True))
    with torch.no_grad():
        correct = loaded.eval()(torch.from_numpy(fog).float() / 255).argmax(1).numpy() == np.asarray(ty)
    assert np.array_equal(flags["robust"].astype(bool), correct)
    np.save(
        folder / "labels.npy", np.tile((np.asarray(ty, dtype=np.uint8) + 1) % 10, 5)
    )  # not this test split's labels
    assert main(["run", str(suite), *args, "--cache-dir", str(tmp_path / "cache2")]) != 0


def test_bench_evaluate_takes_corruption_and_external_entries(tmp_path, monkeypatch):
    """Your own model: the same entries as a suite's, the external path relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = bench.build_model("tiny_cnn", num_classes=4, shape=(1, 12, 12))
    x, _ = _split()
    torch.save({"ids": torch.arange(10), "x_adv": x[:10].float() / 255}, tmp_path / "advs.pt")  # the clean images themselves
    dataset = {"synthetic": {"num_classes": 4, "size": 12, "n_train": 256, "n_test": 96}}
    attacks = ["fgsm", {"corruption": {"name": "fog", "severity": 2}}, {"external": "advs.pt"}]
    args = {"dataset": dataset, "eps": 2, "norm": "L1", "device": "cpu", "cache_dir": tmp_path / "c", "progress": False, "sanity": False}
    result = bench.evaluate(model, attacks=attacks, **args)
    assert list(result.rows.index) == ["Clean", "FGSM", "external:advs.pt", "Worst case", "fog s2"]  # as the leaderboard
    flags = result.flags
    assert (flags["external:advs.pt"] == flags["Clean"]).all()  # no perturbation: robust exactly where clean
    assert (flags["Worst case"] == (flags["FGSM"] & flags["external:advs.pt"])).all()  # fog is not in it
    assert result.robust_accuracy == pytest.approx(flags["Worst case"].mean())
    with pytest.raises(ConfigError, match=r"bench.evaluate: attacks\[1\].corruption.name: unknown corruption 'fgo'"):
        bench.evaluate(model, attacks=["fgsm", {"corruption": "fgo"}], **args)
    torch.save({"ids": torch.arange(3), "x_adv": torch.ones(3, 1, 12, 12)}, tmp_path / "advs.pt")
    with pytest.raises(bench.BenchError, match=r"external 'external:advs.pt': advs.pt: x_adv\[0\]: outside the L1 ball"):
        bench.evaluate(model, attacks=attacks, **args)
