"""The typed specs of a suite: what a suite file says once it has been read and checked.

Frozen dataclasses built strictly from YAML by :func:`bench.core.params.build` (their ``validate``
methods hold each section's own range checks), the plug-in references, the paper table, and
:class:`Suite` that holds them all. Nothing here reads a file: ``bench/suite/load.py`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from bench.core import params as P
from bench.types import ThreatModel


@dataclass(frozen=True)
class OptimizerSpec:
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False

    def validate(self):
        if self.lr <= 0:
            return "lr", "must be > 0"
        if not 0 <= self.momentum < 1:
            return "momentum", "must be in [0, 1)"
        if self.weight_decay < 0:
            return "weight_decay", "must be >= 0"
        return None


@dataclass(frozen=True)
class ScheduleSpec:
    """``piecewise``: lr x gamma^k after the k-th milestone (epochs, 0-indexed, set at epoch start)."""

    name: Literal["piecewise", "constant", "cosine"] = "piecewise"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def validate(self):
        if any(m < 0 for m in self.milestones):
            return "milestones", "must be >= 0"
        if list(self.milestones) != sorted(set(self.milestones)):
            return "milestones", "must be strictly increasing"
        if not 0 < self.gamma <= 1:
            return "gamma", "must be in (0, 1]"
        return None

    def lr(self, base: float, epoch: int, epochs: int) -> float:
        if self.name == "piecewise":
            return base * self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.name == "cosine":
            import math

            return base * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
        return base


@dataclass(frozen=True)
class AugmentSpec:
    crop_padding: int = 0  # random crop with zero padding of this many pixels (0 = off)
    flip: bool = False  # random horizontal flip

    def validate(self):
        return ("crop_padding", "must be >= 0") if self.crop_padding < 0 else None


@dataclass(frozen=True)
class ValAttackSpec:
    """The PGD attack used on the validation split for ``best_val`` selection."""

    steps: int = 20
    alpha: float | None = None  # None = eps/4

    def validate(self):
        return ("steps", "must be at least 1") if self.steps < 1 else None


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 10
    batch_size: int = 128
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    augmentation: AugmentSpec = AugmentSpec()
    val_fraction: float = 0.1  # seeded hold-out from the training set
    val_seed: int = 42
    val_examples: int | None = None  # evaluate selection on at most this many val examples
    subset: int | None = None  # train on a seeded subset of this many examples (after the val split)
    selection: Literal["last", "best_val"] = "best_val"
    val_attack: ValAttackSpec = ValAttackSpec()
    # fast paths (bench/device/precision.py; README "Speed"): the precision of the defence's whole loss, attack
    # steps included: fp32, bf16/fp16 autocast, tf32 (CUDA), or auto (the fastest path the device runs
    # natively, resolved where the task runs: bench/device/native.py); keyed when not fp32, auto keyed as auto.
    # channels_last, torch.compile and fuse_bn (eval-mode adversaries and validation attacks against the
    # model with its BatchNorms folded) are parity-tested and not keyed
    precision: Literal["fp32", "bf16", "fp16", "tf32", "auto"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    fuse_bn: bool = False

    def validate(self):
        if self.epochs < 1:
            return "epochs", "must be at least 1"
        if self.batch_size < 1:
            return "batch_size", "must be at least 1"
        if not 0 <= self.val_fraction < 1:
            return "val_fraction", "must be in [0, 1)"
        if self.selection == "best_val" and self.val_fraction == 0:
            return "selection", "best_val needs a validation split (val_fraction > 0)"
        if self.subset is not None and self.subset < 1:
            return "subset", "must be at least 1"
        if self.val_examples is not None and self.val_examples < 1:
            return "val_examples", "must be at least 1"
        if self.fuse_bn and self.compile:
            return "fuse_bn", "cannot be combined with compile (the folded copy would run uncompiled); choose one"
        return None


@dataclass(frozen=True)
class EvalSpec:
    n_examples: int | None = None  # None = the whole test set
    batch_size: int = 500
    subset_seed: int = 0  # which test examples when n_examples is smaller than the test set
    # bf16/fp16/tf32/auto (as train.precision): attacks in that path, predictions re-checked in fp32, a
    # fp32 parity slice reported when the path is not fp32 (keyed when not fp32)
    precision: Literal["fp32", "bf16", "fp16", "tf32", "auto"] = "fp32"
    # cascade: each attack runs only on the points no attack to its left broke (keyed by those evaluations)
    cascade: bool = False
    # channels_last: evaluated models (attacks, sanity checks, analyses) in channels_last layout; fuse_bn:
    # their eval-mode BatchNorms folded into the convolutions before them. fp32 parity-tested: not keyed
    channels_last: bool = False
    fuse_bn: bool = False

    def validate(self):
        if self.n_examples is not None and self.n_examples < 1:
            return "n_examples", "must be at least 1"
        if self.batch_size < 1:
            return "batch_size", "must be at least 1"
        return None


@dataclass(frozen=True)
class PluginRef:
    """A registry name with its parsed params (and the version of the registered plug-in)."""

    kind: str
    name: str
    params: Any
    version: int
    n_examples: int | None = None  # attacks only: evaluate on the first N of the suite's test examples
    shards: int = 1  # attacks only: split the evaluation into N tasks by sample (bench/plan/shards.py)

    def plain(self) -> dict[str, Any]:
        out = {"name": self.name, "version": self.version, "params": P.to_plain(self.params)}
        if self.n_examples is not None:
            out["n_examples"] = self.n_examples
        if self.shards > 1:  # a sharded evaluation seeds each batch; the unsharded key is unchanged
            out["shards"] = self.shards
        return out


@dataclass(frozen=True)
class WASpec:
    """A weight averager recorded alongside a training run (see ``bench/training/averaging.py``)."""

    kind: Literal["swa", "ema"] = "swa"
    start: int | Literal["first_milestone"] = "first_milestone"  # first epoch (0-indexed) averaged
    every: int = 1  # swa: average every this many epochs
    bn_recompute: bool = True  # recompute BN statistics on clean training data after each update
    decay: float = 0.999  # ema only: per-step decay

    def validate(self):
        if isinstance(self.start, int) and self.start < 0:
            return "start", "must be >= 0"
        if self.every < 1:
            return "every", "must be at least 1"
        if not 0 < self.decay < 1:
            return "decay", "must be in (0, 1)"
        return None


@dataclass(frozen=True)
class LeaderboardSpec:
    """Presentation only (never part of a cache key)."""

    cost: bool = False  # a "Cost (s)" column: training + evaluation seconds per row
    mce_reference: str | None = None  # the row the corruption columns' mCE is relative to (its mCE is 100)


@dataclass(frozen=True)
class CorruptionRef:
    """A corruption column (``- corruption: {name, severity}`` in ``attacks:``): accuracy on the test images under
    one common corruption at one severity. Not an attack: its own leaderboard group, never in the worst case."""

    kind: ClassVar[str] = "corruption"
    name: str  # a registered corruption (``bench ls corruptions``)
    severity: int  # 1..5
    source: Literal["generated", "released"]  # bench/data/corruptions, or the released CIFAR-10-C / CIFAR-100-C files
    version: int  # the generator's registered version (1 for the released files)
    n_examples: ClassVar[None] = None  # run on the suite's test examples (as an attack without n_examples)
    shards: ClassVar[int] = 1
    params: ClassVar[None] = None

    def plain(self) -> dict[str, Any]:
        return {"corruption": self.name, "severity": self.severity, "source": self.source, "version": self.version}

    @property
    def label(self) -> str:
        return f"{self.name} s{self.severity}"


@dataclass(frozen=True)
class ExternalRef:
    """An external column (``- external: {path: advs.pt}`` in ``attacks:``): adversarial examples made outside bench
    (``bench/evaluation/external.py``), keyed by the file's content; part of the worst case."""

    kind: ClassVar[str] = "external"
    label: str  # the leaderboard column ("external:<file name>" unless named)
    path: Path  # resolved; with ``{row}`` / ``{seed}`` in it, one file per leaderboard row and seed (``template``)
    digest: str  # sha256 of the file's bytes: what its evaluations are keyed by ("" for a template)
    template: bool = False  # the planner makes one ref per (row, seed) whose file exists (bench/suite/columns.py)
    version: ClassVar[int] = 1
    n_examples: ClassVar[None] = None
    shards: ClassVar[int] = 1
    params: ClassVar[None] = None

    @property
    def name(self) -> str:
        return "external"

    def plain(self) -> dict[str, Any]:
        return {"external": self.digest}


@dataclass(frozen=True)
class AnalysisSpec:
    """Spectral analyses of trained models (``bench analyze``; methods.md section 6)."""

    rows: tuple[str, ...] = ()  # leaderboard rows to analyse (e.g. pgd_at, fr+wa); () = every row
    n_images: int = 200  # the first N evaluated test examples
    heatmap: bool = True
    heatmap_images: int = 100  # Fourier heat map: H x (W/2+1) bases x this many forwards
    v: float | None = None  # L2 norm of the basis perturbation; None = 4.0 * H / 32 (3.5 at 28x28)
    attack_steps: int = 20  # PGD for the perturbation spectrum and the adversarial filtered accuracy
    attack_alpha: float | None = None  # None = eps/4
    bandwidths: tuple[int, ...] = ()  # square low/high-pass sizes; () = H, H-4, ..., H/4
    radii: tuple[int, ...] = ()  # circular low/high-pass radii; () = 2, 4, ..., H/2
    filter_in_loop: bool = False  # craft the adversarial examples through the filter (adaptive)
    energy_radius: int = 4  # report the fraction of perturbation energy below this radius

    def validate(self):
        return P.range_problem(
            self, min1=("n_images", "heatmap_images", "attack_steps", "energy_radius"), positive=("v", "attack_alpha")
        )


@dataclass(frozen=True)
class CheckpointSpec:
    """A ``checkpoints:`` row: your own weights, evaluated like a zoo row (no training)."""

    name: str  # the leaderboard row
    model: PluginRef
    path: Path | None  # resolved; None for the in-memory model of ``bench.evaluate``
    digest: str  # the weights' content name (``bench/evaluation/checkpoints.py``): what its evaluations are keyed by


@dataclass(frozen=True)
class PaperColumn:
    name: str  # as printed in the paper
    ours: str  # our leaderboard column ("Clean", "PGD-20", ...) or low-pass mask ("b=16")


@dataclass(frozen=True)
class PaperRow:
    label: str  # as printed in the paper
    ours: str | None  # our leaderboard row; None = not run by this suite
    reported: dict[str, float] = field(default_factory=dict)  # paper column name -> value (%)
    input: Literal["clean", "adversarial"] = "clean"  # lpf layout only


@dataclass(frozen=True)
class PaperSpec:
    """A ``paper:`` section: a published table laid out with our results (``bench/report/papers.py``)."""

    title: str
    source: str
    layout: Literal["leaderboard", "lpf"]
    columns: tuple[PaperColumn, ...]
    rows: tuple[PaperRow, ...]
    tolerance_pp: float = 1.0
    note: str = ""


@dataclass
class Suite:
    name: str
    path: Path
    dataset: PluginRef
    model: PluginRef
    threat: ThreatModel
    train: TrainSpec
    defences: list[PluginRef]
    attacks: list[PluginRef]
    eval: EvalSpec
    seeds: list[int]
    wa: list[WASpec | None] = field(default_factory=lambda: [None])  # None = the raw weights
    plugins: list[str] = field(default_factory=list)
    zoo: list[str] = field(default_factory=list)  # "robustbench:<name>" reference rows (no training)
    checkpoints: list[CheckpointSpec] = field(default_factory=list)  # your own .pt files (no training)
    analysis: AnalysisSpec | None = None
    paper: PaperSpec | None = None  # the ``paper:`` section (its rows and columns are checked against the plan by the planner)
    leaderboard: LeaderboardSpec = field(default_factory=LeaderboardSpec)
    corruptions: list[CorruptionRef] = field(default_factory=list)  # ``- corruption:`` entries of ``attacks:``, expanded
    externals: list[ExternalRef] = field(default_factory=list)  # ``- external:`` entries of ``attacks:``
    eval_eps: tuple[ThreatModel, ...] = ()  # eval.eps: extra evaluation radii (the trained models, no retraining)
    sources: dict[str, str] = field(default_factory=dict)  # top-level key -> file it came from
    digest: str = ""  # sha256 of the resolved suite (includes merged): a task names the suite it came from
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, as given (part of the digest; recorded in run.json)
