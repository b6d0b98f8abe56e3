"""The typed result row: one (leaderboard row, seed, column) of a suite's results, built only by
``bench/report/aggregate.py`` from the store and taken by every renderer (leaderboard, ``results.csv`` /
``results.json``, the HTML page, paper tables, ``bench.evaluate``'s ``Evaluation``).

``ResultRow.record()`` is the row as the results files hold it: its column names and order are those of
``results.json`` since before the row was typed (``tests/test_golden_report.py`` pins them). A column a
row does not have is left out of its record (the Worst case row has no evaluation of its own; a run without
sanity checks has no sanity flags), so ``results.csv`` (the union of the records' columns, in order of
first appearance) keeps its empty cells where it always had them. ``records(rows)`` is the edge where a
renderer that wants a ``pandas.DataFrame`` or plain dicts converts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

WORST = "Worst case"
CLEAN = "Clean"
CORRUPTION_MEAN = "Corruption mean"  # the mean of a run's corruption columns (a synthesised row, as Worst case)
SANITY_FLAGS = ("flag_zero_grad", "flag_large_eps", "flag_square_beats_whitebox", "flag_pgd_weaker_than_fgsm")


@dataclass(frozen=True)
class CellStats:
    """The statistics of a leaderboard cell (``bench/core/stats.py``), pooled over the row's seeds."""

    ci_low: float  # lower end of the 95 % interval, in %
    ci_high: float  # upper end of the 95 % interval, in %
    ci_method: str  # "wilson" (one seed) or the two-level bootstrap's name
    p_vs_best: float | None  # paired p against the column's best row, Holm-corrected over the column's pairs
    tied_with_best: bool  # no row significantly better (bold; rank_low == 1)
    is_best: bool  # the column's best mean
    rank_low: int  # best rank compatible with every pairwise test
    rank_high: int  # worst rank compatible with every pairwise test

    def record(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{k}": getattr(self, k) for k in CELL_FIELDS}


CELL_FIELDS = ("ci_low", "ci_high", "ci_method", "p_vs_best", "tied_with_best", "is_best", "rank_low", "rank_high")


@dataclass(frozen=True)
class ResultRow:
    """One column of one seed of one leaderboard row (accuracies as fractions in [0, 1]; seconds of wall time)."""

    # -- the run (the same on every column of a seed)
    display_name: str  # the leaderboard row: defence, "+wa" for weight averaging, a zoo or own model's name
    seed: int  # training seed
    clean_acc: float  # clean accuracy on the clean_n test examples (fraction; NaN when none)
    clean_n: int  # test examples of the run's largest evaluation
    suite: str = ""  # suite name
    dataset: str = ""  # dataset name
    model: str = ""  # model name
    defence: str = ""  # defence name
    wa: str = "none"  # weight-averaging kind, "none" for the raw weights
    weights: str = ""  # label of the evaluated weights
    threat_norm: str = ""  # "Linf", "L2" or "L1" (column p_threat_norm)
    threat_eps: str = ""  # the suite's radius as written, e.g. "8/255" (column p_threat_eps)
    defence_params: Mapping[str, Any] = field(default_factory=dict)  # columns p_defence_<name>
    wa_params: Mapping[str, Any] | None = None  # columns p_wa_<name>; None: raw weights (no columns)
    train_key: str | None = None  # cache key of the train entry
    defence_version: Any = None  # the defence's registered version
    train_seconds: float | None = None  # training wall time (None: not recorded)
    train_precision: str | None = None  # the precision training ran ("auto" resolved)
    best_epoch: int | None = None  # selected epoch, counted from 1 (None: last or not recorded)
    checks: Mapping[str, Any] = field(default_factory=dict)  # flag_* columns: sanity, parity, randomised, health
    flags: str = ""  # the raised flag messages, joined by "; "
    provenance: Mapping[str, Any] = field(default_factory=dict)  # bench, torch, device, git_sha ... of training
    # -- the column
    attack: str = ""  # leaderboard column: an attack's label, or "Worst case"
    attack_name: str = ""  # registered attack name ("worst" for the Worst case)
    family: str = ""  # the attack's family (fgsm, iterative, blackbox ...; "worst")
    n: int = 0  # test examples of this column
    robust_acc: float = float("nan")  # robust accuracy (fraction): survived the attack (every attack for Worst case)
    eval_key: str | None = None  # cache key of the eval entry (None for Worst case)
    attack_version: Any = None  # the attack's registered version (not on Worst case)
    eval_seconds: float | None = None  # evaluation wall time (not on Worst case)
    eval_device: str | None = None  # where the evaluation ran (not on Worst case)
    eval_precision: str | None = None  # the precision the attack ran (not on Worst case)
    max_perturbation: float | None = None  # largest distance of x_adv from x in the threat's norm; > eps is an error
    parity: Mapping[str, Any] | None = None  # parity_* columns of a low-precision evaluation (bench/evaluation/parity.py)
    attack_params: Mapping[str, Any] = field(default_factory=dict)  # columns p_attack_<name>
    # -- statistics (absent when the cell has none)
    cell: CellStats | None = None  # this cell's statistics
    clean_cell: CellStats | None = None  # the row's Clean cell statistics (columns clean_<stat>)

    @property
    def is_worst(self) -> bool:
        return self.attack == WORST

    @property
    def synthesised(self) -> bool:
        """Worst case or Corruption mean: computed from the other columns, no evaluation of its own."""
        return self.attack in (WORST, CORRUPTION_MEAN)

    def record(self) -> dict[str, Any]:
        """The row as ``results.json`` holds it: its columns in their order."""
        out: dict[str, Any] = {
            "suite": self.suite, "dataset": self.dataset, "model": self.model, "defence": self.defence,
            "display_name": self.display_name, "wa": self.wa, "weights": self.weights, "seed": self.seed,
            "clean_n": self.clean_n, "clean_acc": self.clean_acc, "p_threat_norm": self.threat_norm,
            "p_threat_eps": self.threat_eps, **_params("defence", self.defence_params),
            **(_params("wa", self.wa_params) if self.wa_params is not None else {}),
            "train_key": self.train_key, "defence_version": self.defence_version, "train_seconds": self.train_seconds,
            "train_precision": self.train_precision, "best_epoch": self.best_epoch,
        }  # fmt: skip
        sanity = {k: v for k, v in self.checks.items() if k.startswith(SANITY_FLAGS)}
        out.update({**sanity, "flags": self.flags, **{k: v for k, v in self.checks.items() if k not in sanity}})
        out.update(self.provenance)
        out.update({"attack": self.attack, "attack_name": self.attack_name, "family": self.family, "n": self.n,
                    "robust_acc": self.robust_acc, "eval_key": self.eval_key})  # fmt: skip
        if not self.synthesised:
            out.update({
                "attack_version": self.attack_version, "eval_seconds": self.eval_seconds, "eval_device": self.eval_device,
                "eval_precision": self.eval_precision, "max_perturbation": self.max_perturbation,
                **(self.parity or {}), **_params("attack", self.attack_params),
            })  # fmt: skip
        if self.cell is not None:
            out.update(self.cell.record())
        if self.clean_cell is not None:
            out.update(self.clean_cell.record("clean_"))
        return out


def _params(prefix: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {f"p_{prefix}_{k}": v for k, v in params.items()}


def records(rows: Iterable[ResultRow]) -> list[dict[str, Any]]:
    """The rows as plain dicts (``results.json``'s records), for a ``DataFrame`` or a lower layer's helper."""
    return [r.record() for r in rows]
