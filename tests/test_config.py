"""Suite parsing: includes, exact eps, strict keys and types, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from bench.commands.cli import main
from bench.core.errors import ConfigError
from bench.plan.expand import expand
from bench.suite.load import load_suite
from tests.conftest import MINIMAL_SUITE as BASE
from tests.conftest import ROOT, SUITES, write_suite


def shipped_suites() -> list[Path]:
    return sorted(p for p in SUITES.rglob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", shipped_suites(), ids=lambda p: p.name)
def test_every_shipped_suite_validates(path: Path) -> None:
    suite = load_suite(path)
    assert suite.defences and suite.seeds


@pytest.mark.parametrize(
    "written, exact, text",
    [("8/255", Fraction(8, 255), "8/255"), ("0.1", Fraction(1, 10), "0.1"), ("1", Fraction(1), "1"), ("16/510", Fraction(8, 255), "16/510")],
)
def test_eps_is_parsed_exactly(tmp_path: Path, written: str, exact: Fraction, text: str) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", BASE.replace("8/255", written)))
    assert suite.threat.eps == exact
    assert suite.threat.eps_text == text


def test_float_params_accept_fractions_and_yaml_exponents(tmp_path: Path) -> None:
    text = BASE.replace("attacks: [fgsm]", "attacks: [{pgd: {alpha: 2/255, steps: 3}}]")
    text = text.replace("train: {epochs: 1}", "train: {epochs: 1, optimizer: {weight_decay: 5e-4}}")
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    assert suite.attacks[0].params.alpha == 2 / 255
    assert suite.train.optimizer.weight_decay == 5e-4  # YAML 1.1 reads 5e-4 as a string


def test_include_is_relative_and_local_keys_win(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_suite(tmp_path / "sub" / "base.yaml", BASE)
    suite = load_suite(write_suite(tmp_path / "sub" / "top.yaml", "include: base.yaml\nname: top\nseeds: [1, 2]\n"))
    assert suite.name == "top" and suite.seeds == [1, 2]
    assert suite.dataset.name == "synthetic"
    assert suite.sources["dataset"].endswith("base.yaml")
    assert suite.sources["name"].endswith("top.yaml")


def test_include_cycle_is_rejected(tmp_path: Path) -> None:
    write_suite(tmp_path / "a.yaml", "include: b.yaml\n" + BASE)
    write_suite(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_suite(tmp_path / "a.yaml")


BROKEN = [
    ("name: [unclosed\n", "invalid YAML"),
    (BASE + "epochs: 3\n", "epochs: unknown key"),
    (BASE + "seed: [0]\n", "did you mean 'seeds'"),
    (BASE.replace("train: {epochs: 1}", "train: {epochs: -1}"), "train.epochs: must be at least 1"),
    (BASE.replace("train: {epochs: 1}", "train: {epochs: ten}"), "train.epochs: expected an integer"),
    (BASE.replace("train: {epochs: 1}", "train: {epoch: 1}"), "did you mean 'epochs'"),
    (BASE.replace("8/255", "0"), "threat.eps: must be in (0, 1]"),
    (BASE.replace("8/255", "2"), "threat.eps: must be in (0, 1]"),
    (BASE.replace("8/255", "1/0"), "threat.eps: division by zero"),
    (BASE.replace("8/255", "eight"), "threat.eps: expected a number"),
    (BASE.replace("[standard]", "[standrd]"), "did you mean 'standard'"),
    (BASE.replace("[standard]", "[{pgd_at: {stepz: 3}}]"), "defences[0].pgd_at.stepz: unknown key"),
    (BASE.replace("[fgsm]", "[{pgd: {steps: 0}}]"), "attacks[0].pgd.steps: must be at least 1"),
    (BASE.replace("tiny_cnn", "tiny_cnnn"), "unknown model 'tiny_cnnn'"),
    (BASE.replace("name: t\n", ""), "name: missing required key"),
    (BASE + "include: nowhere.yaml\n", "include: file not found"),
    (BASE + "seeds: [0, 0]\n", "seeds must be unique"),
    (BASE + "name: again\n", "duplicate key 'name'"),
    (BASE + "plugins: [no_such_module_xyz]\n", "cannot import plug-in module"),
    (BASE + "eval: {n_examples: 0}\n", "eval.n_examples: must be at least 1"),
    (BASE + "analysis: {rows: [standrd]}\n", "analysis.rows[0]: no leaderboard row 'standrd' (did you mean 'standard'?)"),
    (BASE + "zoo: [Carmon2019Unlabeled]\n", "zoo[0]: expected robustbench:<model name>"),
    (BASE + "wa: [swa]\n", "wa[0].start: first_milestone (no milestones) is not before the end of training"),
    (BASE.replace("[fgsm]", "[{autoattack: {version: standard, n_iter: 5}}]"), "autoattack.n_iter: only with version custom"),
]


@pytest.mark.parametrize("text, expected", BROKEN, ids=[e for _, e in BROKEN])
def test_broken_suites_give_one_line_naming_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write_suite(tmp_path / "broken.yaml", text)
    with pytest.raises(ConfigError) as info:
        expand(load_suite(path))  # what needs the plan (analysis rows) is checked by the planner
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_validate_cli_exit_code_2_one_line_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_suite(tmp_path / "broken.yaml", BASE.replace("8/255", "1/0"))
    code = main(["validate", str(path), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "broken.yaml: threat.eps" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()


def test_cli_process_exit_code_and_no_traceback(tmp_path: Path) -> None:
    path = write_suite(tmp_path / "broken.yaml", BASE.replace("[standard]", "[trade]"))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", str(path), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("bench: error: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_presets_start_from_a_registered_bundle_and_keys_override(tmp_path: Path) -> None:
    text = BASE.replace("[standard]", "[{trades: {preset: official}}, {trades: {preset: official, beta: 1}}]")
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    first, second = (d.params for d in suite.defences)
    assert first.alpha == 0.007 and first.beta == 6.0
    assert second.alpha == 0.007 and second.beta == 1.0
    bad = write_suite(tmp_path / "bad.yaml", BASE.replace("[standard]", "[{trades: {preset: offical}}]"))
    with pytest.raises(ConfigError, match=r"defences\[0\]\.trades\.preset: unknown preset 'offical'"):
        load_suite(bad)


def test_what_needs_only_the_suite_fails_when_it_is_loaded(tmp_path: Path) -> None:
    """Cross-field checks live in the suite (bench/suite/load.py); the planner checks only what needs the plan."""
    cascade = write_suite(tmp_path / "c.yaml", BASE.replace("[fgsm]", "[fgsm, {pgd: {shards: 2}}]") + "eval: {cascade: true}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: eval\.cascade: cannot be combined with sharded attacks \(shards: N\)"):
        load_suite(cascade)
    with pytest.raises(ConfigError, match=r"c\.yaml \(with --set eval\.cascade=true\): eval\.cascade: cannot be combined"):
        load_suite(cascade, ["eval.cascade=true"])
    paper = write_suite(tmp_path / "p.yaml", BASE + "paper: {title: t, columns: [Clean], rows: [{label: A}]}\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: paper\.source: missing"):
        load_suite(paper)
    unknown_row = write_suite(tmp_path / "r.yaml", BASE + "paper: {title: t, source: s, columns: [Clean], rows: [{label: A, ours: pgd_at}]}\n")
    suite = load_suite(unknown_row)  # a row of the plan: checked by the planner
    with pytest.raises(ConfigError, match=r"r\.yaml: paper\.rows\[0\]\.ours: unknown row 'pgd_at'"):
        expand(suite)
    with pytest.raises(ConfigError, match=r"--limit: must be a positive number of test examples, got 0"):
        expand(load_suite(write_suite(tmp_path / "ok.yaml", BASE)), limit=0)
