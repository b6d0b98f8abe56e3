"""The typed result row (``bench/report/rows.py``): ``results.json``'s columns, their order and types, from a
real smoke-suite cache (``tests/golden/smoke/cache``); a column a row lacks stays out of its record."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from bench.engine.store import Store
from bench.plan.expand import expand
from bench.report.aggregate import collect
from bench.report.render import results_json
from bench.report.rows import WORST, CellStats, ResultRow
from bench.suite.load import load_suite

ROOT = Path(__file__).resolve().parent
GOLDEN = ROOT / "golden" / "smoke"

RUN = ["suite", "dataset", "model", "defence", "display_name", "wa", "weights", "seed", "clean_n", "clean_acc",
       "p_threat_norm", "p_threat_eps"]  # fmt: skip
TRAIN = ["train_key", "defence_version", "train_seconds", "train_precision", "best_epoch"]
FLAGS = ["flag_zero_grad_frac", "flag_large_eps_acc", "flag_zero_grad", "flag_large_eps", "flag_pgd_weaker_than_fgsm_p",
         "flag_pgd_weaker_than_fgsm", "flags", "flag_randomised", "flag_probabilities", "flag_no_eot",
         "flag_train_at_chance", "flag_robust_collapse"]  # fmt: skip
PROVENANCE = ["bench", "cuda", "device", "git_sha", "numpy", "python", "torch"]
COLUMN = ["attack", "attack_name", "family", "n", "robust_acc", "eval_key"]
EVAL = ["attack_version", "eval_seconds", "eval_device", "eval_precision", "max_perturbation"]
CELL = ["ci_low", "ci_high", "ci_method", "p_vs_best", "tied_with_best", "is_best", "rank_low", "rank_high"]
STATS = CELL + [f"clean_{k}" for k in CELL]
TYPES = {
    **dict.fromkeys(["suite", "dataset", "model", "defence", "display_name", "wa", "weights", "p_threat_norm", "p_threat_eps",
                     "train_key", "train_precision", "flags", "attack", "attack_name", "family", "eval_device", "eval_precision",
                     "ci_method", "clean_ci_method", "bench", "device", "git_sha", "numpy", "python", "torch"], str),
    **dict.fromkeys(["seed", "clean_n", "defence_version", "best_epoch", "n", "attack_version", "rank_low", "rank_high",
                     "clean_rank_low", "clean_rank_high"], int),
    **dict.fromkeys(["clean_acc", "train_seconds", "flag_zero_grad_frac", "flag_large_eps_acc", "flag_pgd_weaker_than_fgsm_p",
                     "robust_acc", "eval_seconds", "max_perturbation", "ci_low", "ci_high", "p_vs_best", "clean_ci_low",
                     "clean_ci_high", "clean_p_vs_best"], float),
    **dict.fromkeys([c for c in FLAGS + STATS if c.startswith(("flag_", "tied", "is_", "clean_tied", "clean_is"))
                     and not c.endswith(("_p", "_frac", "_acc"))], bool),
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[ResultRow]:
    cache = tmp_path_factory.mktemp("rows") / "cache"
    shutil.copytree(GOLDEN / "cache", cache)
    return collect(expand(load_suite(ROOT.parent / "suites" / "smoke.yaml")), Store(cache))


def test_results_json_columns_order_and_types(rows: list[ResultRow]) -> None:
    assert results_json(rows) == (GOLDEN / "out" / "results.json").read_text()  # the file as the code before the row wrote it
    records = [r.record() for r in rows]
    assert len(records) == 12 and [r.attack for r in rows].count(WORST) == 4
    defence = {"standard": [], "pgd_at": ["p_defence_steps", "p_defence_alpha", "p_defence_attack_bn"]}
    for row, rec in zip(rows, records):
        wa = ["p_wa_kind", "p_wa_start", "p_wa_every", "p_wa_bn_recompute", "p_wa_decay"] if row.wa == "swa" else []
        attack = [] if row.is_worst else EVAL + [f"p_attack_{k}" for k in row.attack_params]
        assert list(rec) == RUN + defence[row.defence] + wa + TRAIN + FLAGS + PROVENANCE + COLUMN + attack + STATS
        for column, value in rec.items():
            if column in TYPES and value is not None:
                assert type(value) is TYPES[column], (column, value)
        assert (rec["eval_key"] is None) == row.is_worst and row.cell is not None and row.clean_cell is not None
        assert 0 <= rec["robust_acc"] <= 1 and rec["clean_acc"] == pytest.approx(1.0)
    best = next(r for r in records if r["display_name"] == "pgd_at+wa" and r["attack"] == WORST)
    assert best["rank_low"] == 1 and best["is_best"] and math.isnan(best["p_vs_best"])
    assert json.loads((GOLDEN / "out" / "results.json").read_text())[0]["p_threat_eps"] == "24/255"


def test_absent_columns_stay_out_and_none_ones_stay_in() -> None:
    """A cascade's comparison flags are None (present); a run without sanity checks has none (absent);
    ``flags`` sits after the sanity flags; parity columns only on a low-precision evaluation."""
    cell = CellStats(50.0, 60.0, "wilson", 0.5, True, False, 1, 2)
    base = ResultRow(display_name="r", seed=0, clean_acc=0.9, clean_n=10, attack="PGD-10", attack_params={"steps": 10},
                     checks={"flag_randomised": False, "flag_pgd_weaker_than_fgsm_p": None, "flag_pgd_weaker_than_fgsm": None},
                     flags="x", cell=cell)  # fmt: skip
    rec = base.record()
    keys = list(rec)
    assert keys[keys.index("best_epoch") + 1 :][:4] == ["flag_pgd_weaker_than_fgsm_p", "flag_pgd_weaker_than_fgsm", "flags", "flag_randomised"]
    assert rec["flag_pgd_weaker_than_fgsm"] is None and "flag_zero_grad" not in rec and "parity_n" not in rec
    assert keys[-8:] == CELL and rec["p_attack_steps"] == 10 and "clean_ci_low" not in rec
    low = ResultRow(display_name="r", seed=0, clean_acc=0.9, clean_n=10, attack="PGD-10", parity={"parity_n": 5, "parity_pp": 0.0})
    assert list(low.record())[-2:] == ["parity_n", "parity_pp"]
    worst = ResultRow(display_name="r", seed=0, clean_acc=0.9, clean_n=10, attack=WORST, parity={"parity_n": 5})
    assert not set(worst.record()) & {"parity_n", "eval_seconds", "attack_version", "max_perturbation"}
