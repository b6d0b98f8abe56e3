"""Suite YAML -> :class:`Suite`, strictly.

* ``include: other.yaml`` (relative to the including file) is loaded first; keys of the including
  file win (shallow merge); include cycles are rejected.
* Unknown keys, wrong types and out-of-range values fail with one line naming the file and the
  field; unknown plug-in names fail with a "did you mean".
* eps and other numbers may be written as fractions (``8/255``), parsed exactly with ``Fraction``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bench.core import params as P
from bench.core.errors import ConfigError, show
from bench.registry import ATTACKS, DATASETS, DEFENCES, MODELS, Registry, RegistryError
from bench.types import ThreatModel

# ----------------------------------------------------------------------------------------- specs


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
    paper_raw: Any = None  # the ``paper:`` section, parsed by the planner against the plan's rows
    leaderboard: LeaderboardSpec = field(default_factory=LeaderboardSpec)
    eval_eps: tuple[ThreatModel, ...] = ()  # eval.eps: extra evaluation radii (the trained models, no retraining)
    sources: dict[str, str] = field(default_factory=dict)  # top-level key -> file it came from
    digest: str = ""  # sha256 of the resolved suite (includes merged): a task names the suite it came from
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, as given (part of the digest; recorded in run.json)


# ---------------------------------------------------------------------------------------- loading

TOP_LEVEL = (
    "name",
    "include",
    "dataset",
    "model",
    "threat",
    "train",
    "defences",
    "wa",
    "attacks",
    "eval",
    "seeds",
    "plugins",
    "zoo",
    "checkpoints",
    "analysis",
    "paper",
    "leaderboard",
    "description",
)
REQUIRED = ("name", "dataset", "model", "threat", "defences")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")  # one folder name under the results directory


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of silently keeping the last."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: SafeLoader merges (and checks) it
            continue
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):  # SafeLoader says "found unhashable key"
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {show(key)}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    """Integers of at most 64 bits (seeds and sizes: what torch accepts); never 5000 digits."""
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError as e:
        problem = str(e).split(";")[0]  # not Python's advice to raise its digit limit
        raise yaml.constructor.ConstructorError(None, None, f"not an integer: {problem}", node.start_mark) from None
    if not -(2**63) <= value < 2**64:
        raise yaml.constructor.ConstructorError(None, None, "integer out of range (more than 64 bits)", node.start_mark)
    return value


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file (directories, /dev/zero and FIFOs are never read)."""
    try:
        if path.is_file():
            return None
        return "not a regular file" if path.exists() else "file not found"
    except OSError as e:  # e.g. a name too long
        return f"cannot read: {e.strerror}"


def _read_yaml(path: Path) -> dict[str, Any]:
    problem = file_problem(path)
    if problem:
        raise ConfigError(str(path), problem)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(str(path), f"invalid YAML at {where}: {problem}") from None
    except (RecursionError, ValueError) as e:  # ValueError: a date such as 2001-13-45
        problem = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ConfigError(str(path), f"invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "a suite must be a mapping of keys (name, dataset, model, ...)")
    return data


def load_raw(path: Path, stack: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Merged top-level mapping after includes, and for each key the file that set it."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(str(path), f"include: cycle detected ({chain})")
    data = _read_yaml(path)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if "include" in data:
        inc = data["include"]
        if not isinstance(inc, str) or not inc:
            raise ConfigError(f"{path}: include", "expected a file name")
        inc_path = path.parent / Path(inc).expanduser()  # relative to the including file; ~ is the home directory
        problem = file_problem(inc_path)
        if problem:
            raise ConfigError(f"{path}: include", f"{problem}: {inc_path}")
        merged, sources = load_raw(inc_path, (*stack, resolved))
    for key, value in data.items():
        if key == "include":
            continue
        merged[key] = value
        sources[key] = str(path)
    return merged, sources


_LOADED_PLUGINS: dict[str, object] = {}


def load_plugins(specs: list[str], base: Path, where: str) -> None:
    """Import plug-in modules (dotted names) or .py files (relative to the suite file) once each."""
    for i, spec in enumerate(specs):
        if not isinstance(spec, str):
            raise ConfigError(f"{where}[{i}]", f"expected a module name or .py file, got {show(spec)}")
        if spec.endswith(".py"):
            path = (base / Path(spec).expanduser()).resolve()
            key = str(path)
            if key in _LOADED_PLUGINS:
                continue
            problem = file_problem(path)
            if problem:
                raise ConfigError(f"{where}[{i}]", f"plug-in {problem}: {path}")
            # stable across processes, so a worker that loads the same file can unpickle its params
            mod_name = f"bench_plugin_{path.stem}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
            spec_obj = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec_obj)  # type: ignore[arg-type]
            sys.modules[mod_name] = module
            try:
                spec_obj.loader.exec_module(module)  # type: ignore[union-attr]
            except Exception as e:  # a broken plug-in is the user's error: say which
                sys.modules.pop(mod_name, None)
                raise ConfigError(f"{where}[{i}]", f"plug-in {spec} failed to import: {type(e).__name__}: {e}") from None
            _LOADED_PLUGINS[key] = module
        else:
            if spec in _LOADED_PLUGINS:
                continue
            try:
                _LOADED_PLUGINS[spec] = importlib.import_module(spec)
            except Exception as e:  # also "" and ".x" (ValueError, TypeError)
                raise ConfigError(f"{where}[{i}]", f"cannot import plug-in module {show(spec)}: {e}") from None


def parse_ref(registry: Registry, item: Any, where: str) -> PluginRef:
    """``name`` or ``{name: {param: value}}`` -> PluginRef with strictly parsed params.

    ``preset: NAME`` starts from a named params bundle registered with the plug-in (e.g.
    ``trades: {preset: official}``); other keys override it. An attack entry may also carry ``n_examples: N`` (not a parameter of the attack): it is then
    run on the first N of the suite's test examples (a nested subset), e.g. for AutoAttack on CPU;
    and ``shards: N``: its evaluations run as N tasks by sample, merged by sample id (``bench/plan/shards.py``).
    """
    if isinstance(item, str):
        name, overrides = item, None
    elif isinstance(item, dict) and len(item) == 1:
        name, overrides = next(iter(item.items()))
        if not isinstance(name, str):
            raise ConfigError(where, f"expected a {registry.kind} name, got {show(name)}")
    else:
        raise ConfigError(where, f"expected a {registry.kind} name or {{name: {{param: value}}}}, got {show(item)}")
    try:
        entry = registry.get(name)
    except RegistryError as e:
        raise ConfigError(where, str(e)) from None
    preset_name = overrides.get("preset") if isinstance(overrides, dict) else None
    if preset_name is not None:
        presets = entry.caps.get("presets", {})
        if not isinstance(preset_name, str) or preset_name not in presets:
            known = ", ".join(presets) or "none"
            hint = P.did_you_mean(preset_name, presets)
            raise ConfigError(f"{where}.{name}.preset", f"unknown preset {show(preset_name)}{hint}; {name} has: {known}")
        overrides = {**P.to_plain(presets[preset_name]), **{k: v for k, v in overrides.items() if k != "preset"}}
    special: dict[str, int] = {}  # n_examples, shards: how the attack is run, not its parameters
    for extra in ("n_examples", "shards"):
        if registry is ATTACKS and isinstance(overrides, dict) and extra in overrides:
            overrides = dict(overrides)
            value = special[extra] = overrides.pop(extra)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}.{name}.{extra}", f"expected a positive integer, got {show(value)}")
    params = P.build(entry.params, overrides, f"{where}.{name}")
    return PluginRef(registry.kind, name, params, entry.version, special.get("n_examples"), special.get("shards", 1))


def parse_ref_list(registry: Registry, items: Any, where: str, allow_empty: bool = False) -> list[PluginRef]:
    if not isinstance(items, list):
        raise ConfigError(where, f"expected a list, got {type(items).__name__}")
    if not items and not allow_empty:
        raise ConfigError(where, "must not be empty")
    refs = [parse_ref(registry, item, f"{where}[{i}]") for i, item in enumerate(items)]
    seen: set = set()
    for i, ref in enumerate(refs):
        key = (ref.name, ref.params, ref.n_examples, ref.shards)
        if key in seen:
            raise ConfigError(f"{where}[{i}]", f"duplicate entry {ref.name!r} with the same parameters")
        seen.add(key)
    return refs


NORMS = ("Linf", "L2", "L1")


def parse_eps(raw: Any, where: str, norm: str) -> tuple[Any, str]:
    """An exact radius and its text as written: in (0, 1] for L-inf, > 0 for L2 and L1 (pixel space)."""
    eps = P.parse_fraction(raw, where)
    if not (0 < eps <= 1 if norm == "Linf" else eps > 0):
        raise ConfigError(where, f"must be in {'(0, 1]' if norm == 'Linf' else '(0, inf)'} for {norm} (pixel space), got {show(raw)}")
    return eps, raw.strip() if isinstance(raw, str) else repr(raw)


def parse_threat(raw: Any, where: str) -> ThreatModel:
    if not isinstance(raw, dict):
        raise ConfigError(where, "expected a mapping {norm: Linf, eps: 8/255}")
    unknown = set(raw) - {"norm", "eps"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown, key=str)[0]}", "unknown key; allowed: norm, eps")
    norm = raw.get("norm", "Linf")
    if norm not in NORMS:
        raise ConfigError(f"{where}.norm", f"expected Linf, L2 or L1, got {show(norm)}{P.did_you_mean(norm, NORMS)}")
    if "eps" not in raw:
        raise ConfigError(f"{where}.eps", "missing (write it as 8/255 or 0.1)")
    return ThreatModel(norm, *parse_eps(raw["eps"], f"{where}.eps", norm))



def _eval_eps(raw: Any, where: str, threat: ThreatModel) -> tuple[ThreatModel, ...]:
    """``eval.eps``: radii to evaluate at besides the suite's (which stays the training and leaderboard eps)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ConfigError(where, "expected a non-empty list of radii such as [2/255, 4/255, 16/255]")
    out = []
    for i, item in enumerate(raw):
        eps, text = parse_eps(item, f"{where}[{i}]", threat.norm)
        if eps in [t.eps for t in out]:
            raise ConfigError(f"{where}[{i}]", f"duplicate radius {text}")
        out.append(ThreatModel(threat.norm, eps, text))
    return tuple(t for t in out if t.eps != threat.eps)


def _seeds(raw: Any, where: str) -> list[int]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(where, "expected a non-empty list of integers")
    for i, s in enumerate(raw):
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ConfigError(f"{where}[{i}]", f"expected a non-negative integer, got {show(s)}")
    if len(set(raw)) != len(raw):
        raise ConfigError(where, "seeds must be unique")
    return list(raw)


def _wa(raw: Any, where: str, train: TrainSpec) -> list[WASpec | None]:
    """``none``, ``swa``, ``ema`` or ``{kind: swa, start: ..., every: ...}`` entries."""
    items = raw if isinstance(raw, list) else [raw]
    out: list[WASpec | None] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if item in ("none", None):
            spec = None
        elif item in ("swa", "ema"):
            spec = WASpec(kind=item)
        elif isinstance(item, dict):
            spec = P.build(WASpec, item, at)
        else:
            hint = P.did_you_mean(item, ("none", "swa", "ema"))
            raise ConfigError(at, f"expected none, swa, ema or {{kind: swa, start: ..., every: ...}}, got {show(item)}{hint}")
        if spec is not None:
            start = train.schedule.milestones[0] if spec.start == "first_milestone" and train.schedule.milestones else spec.start
            if start == "first_milestone" or start >= train.epochs:
                shown = "first_milestone (no milestones)" if start == "first_milestone" else start
                raise ConfigError(f"{at}.start", f"{shown} is not before the end of training ({train.epochs} epochs)")
        if spec in out:
            raise ConfigError(at, "duplicate weight-averaging entry")
        out.append(spec)
    return out or [None]


def _zoo(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or any(not isinstance(z, str) for z in raw):
        raise ConfigError(where, "expected a list such as [robustbench:Carmon2019Unlabeled]")
    for i, entry in enumerate(raw):
        if not entry.startswith("robustbench:") or len(entry) == len("robustbench:"):
            raise ConfigError(f"{where}[{i}]", f"expected robustbench:<model name>, got {show(entry)}")
    if len(set(raw)) != len(raw):
        raise ConfigError(where, "duplicate entries")
    return list(raw)


def _checkpoints(raw: Any, where: str, base: Path, dataset: PluginRef, taken: list[str]) -> list[CheckpointSpec]:
    """``[{name: mine, model: small_cnn, path: ckpt/mine.pt}]``: each file loaded (weights only) and checked now."""
    from bench.evaluation.checkpoints import checkpoint_digest

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(where, "expected a list such as [{name: mine, model: small_cnn, path: ckpt/mine.pt}]")
    out: list[CheckpointSpec] = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(at, f"expected {{name: ..., model: ..., path: ...}}, got {show(item)}")
        for key in item:
            if key not in ("name", "model", "path"):
                raise ConfigError(f"{at}.{key}", "unknown key; allowed: name, model, path")
        for key in ("name", "model", "path"):
            if key not in item:
                raise ConfigError(f"{at}.{key}", "missing")
        name, text = item["name"], item["path"]
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{at}.name", f"expected a leaderboard row name, got {show(name)}")
        if name in taken or name in [c.name for c in out]:
            raise ConfigError(f"{at}.name", f"{name!r} is already a row of this suite")
        model = parse_ref(MODELS, item["model"], f"{at}.model")
        if not isinstance(text, str) or not text:
            raise ConfigError(f"{at}.path", f"expected a file name, got {show(text)}")
        path = (base / Path(text).expanduser()).resolve()  # relative to the suite file; ~ expanded
        problem = file_problem(path)
        if problem:
            raise ConfigError(f"{at}.path", f"{problem}: {path}")
        out.append(CheckpointSpec(name, model, path, checkpoint_digest(path, model, dataset, f"{at}.path")))
    return out


def _files_digest(paths: list[str | Path], overrides: tuple[str, ...] = ()) -> str:
    """sha256 over the suite file, its includes and the ``--set`` overrides: a task planned from them names this digest."""
    h = hashlib.sha256()
    for p in sorted({str(Path(p).resolve()) for p in paths}):
        h.update(p.encode() + b"\0" + Path(p).read_bytes() + b"\0")
    for item in overrides:  # none: the digest of the files alone, as before
        h.update(b"--set\0" + item.encode() + b"\0")
    return h.hexdigest()


# -------------------------------------------------------------------------------------- overrides

Overrides = Mapping[str, Any] | Iterable[str] | None


def normalize_overrides(overrides: Overrides) -> tuple[str, ...]:
    """``{"train.epochs": 2}`` or ``["train.epochs=2"]`` -> ``("train.epochs=2",)``: plain text that a
    task's ``SuiteRef`` carries to other processes. Mapping values are written as JSON (a YAML subset)."""
    if not overrides:
        return ()
    if isinstance(overrides, Mapping):
        items = []
        for key, value in overrides.items():
            try:
                items.append(f"{key}={json.dumps(value)}")
            except TypeError:
                raise ConfigError(f"--set {key}", f"expected plain YAML data (numbers, strings, lists, mappings), got {show(value)}") from None
        return tuple(items)
    if isinstance(overrides, str):
        overrides = [overrides]
    out = []
    for item in overrides:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError("--set", f"expected KEY=VALUE such as train.epochs=2, got {show(item)}")
        out.append(item)
    return tuple(out)


def _override_value(item: str, where: str) -> tuple[list[str], Any]:
    text = item.split("=", 1)[1]
    try:
        value = yaml.load(text, Loader=StrictLoader) if text.strip() else None
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(where, f"invalid YAML value {show(text)}: {problem}") from None
    parts = item.split("=", 1)[0].strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(where, "expected a dotted key such as train.epochs or defences.1.pgd_at.steps")
    return parts, value


def _child(node: Any, part: str, nxt: str, where: str) -> Any:
    """The container at ``node[part]`` for a path going on with ``nxt``; a missing or empty mapping is
    created, and a plug-in written by name (``- pgd_at``) becomes ``{pgd_at: {}}`` to take a parameter."""
    if isinstance(node, list):
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            raise ConfigError(where, f"{part} is not an index of a list of {len(node)}")
        index = int(part)
        if isinstance(node[index], str) and node[index] == nxt:
            node[index] = {nxt: {}}
        return node[index]
    if node.get(part) is None:
        node[part] = {}
    elif isinstance(node[part], str) and node[part] == nxt:  # dataset: cifar10 -> {cifar10: {...}}
        node[part] = {nxt: {}}
    return node[part]


def apply_overrides(raw: dict[str, Any], overrides: tuple[str, ...], path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged suite mapping with each ``KEY=VALUE`` set (YAML value, dotted key, list indexes),
    and for each top-level key the overrides that touched it (named in error messages)."""
    raw = copy.deepcopy(raw)  # YAML aliases share objects: set one place only
    touched: dict[str, str] = {}
    for item in overrides:
        where = f"{path}: --set {item.split('=', 1)[0].strip()}"
        parts, value = _override_value(item, where)
        if parts[0] == "include":
            raise ConfigError(where, "include cannot be overridden (includes are merged before --set applies)")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, parts[i + 1], where)
            if not isinstance(node, (dict, list)):
                raise ConfigError(where, f"{'.'.join(parts[: i + 1])} is {show(node)}, not a mapping or list")
        last = parts[-1]
        if isinstance(node, list):
            _child(node, last, "", where)  # checks the index
            node[int(last)] = value
        else:
            node[last] = value
        touched[parts[0]] = f"{touched.get(parts[0], '')} --set {item}"
    return raw, touched


def load_suite(path: str | Path, overrides: Overrides = None) -> Suite:
    """Parse and validate a suite file (and its includes). Raises ConfigError (one line) on bad input.

    ``overrides`` (``bench run --set``): ``{"train.epochs": 2}`` or ``["train.epochs=2", "wa=[none, swa]"]``
    set keys of the merged suite (after includes) before it is validated, exactly as if written in it.
    """
    path = Path(path).expanduser()
    raw, sources = load_raw(path)
    sets = normalize_overrides(overrides)
    raw, touched = apply_overrides(raw, sets, path)
    try:
        return _parse(path, raw, sources, sets, touched)
    except ConfigError as e:
        raise e.naming(sets) from None


def _parse(path: Path, raw: dict[str, Any], sources: dict[str, str], sets: tuple[str, ...], touched: dict[str, str]) -> Suite:
    """The suite of the merged mapping ``raw`` (``--set`` applied: ``touched`` names them per top-level key)."""
    at = lambda key: f"{sources.get(key, path)}{f' (with{touched[key]})' if key in touched else ''}: {key}"  # noqa: E731

    for key in raw:
        if key not in TOP_LEVEL:
            hint = P.did_you_mean(key, TOP_LEVEL)
            raise ConfigError(at(key), f"unknown key{hint}; allowed: {', '.join(TOP_LEVEL)}")
    for key in REQUIRED:
        if key not in raw:
            raise ConfigError(f"{path}: {key}", "missing required key")

    plugins = [] if raw.get("plugins") is None else raw["plugins"]
    if not isinstance(plugins, list):
        raise ConfigError(at("plugins"), "expected a list of modules or .py files")
    load_plugins(plugins, Path(sources.get("plugins", path)).parent, at("plugins"))

    name = raw["name"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(at("name"), f"expected a folder name (letters, digits, . _ + -; at most 100), got {show(name)}")

    train = P.build(TrainSpec, raw.get("train"), at("train"))
    raw_eval, eval_eps = raw.get("eval"), None
    if isinstance(raw_eval, dict):  # eval.eps is not part of the eval spec (nor of its cache key): each radius is its own job
        eval_eps = raw_eval.get("eps")
        raw_eval = {k: v for k, v in raw_eval.items() if k != "eps"}
    suite = Suite(
        name=name,
        path=path,
        dataset=parse_ref(DATASETS, raw["dataset"], at("dataset")),
        model=parse_ref(MODELS, raw["model"], at("model")),
        threat=parse_threat(raw["threat"], at("threat")),
        train=train,
        defences=parse_ref_list(DEFENCES, raw["defences"], at("defences"), allow_empty=bool(raw.get("checkpoints"))),
        attacks=parse_ref_list(ATTACKS, [] if raw.get("attacks") is None else raw["attacks"], at("attacks"), allow_empty=True),
        eval=P.build(EvalSpec, raw_eval, at("eval")),
        seeds=_seeds(raw.get("seeds", [0]), at("seeds")),
        wa=_wa(raw.get("wa", ["none"]), at("wa"), train),
        plugins=list(plugins),
        zoo=_zoo(raw.get("zoo", []), at("zoo")),
        analysis=None if raw.get("analysis") is None or raw["analysis"] is False else P.build(AnalysisSpec, raw["analysis"] if raw["analysis"] is not True else {}, at("analysis")),
        sources=sources,
        paper_raw=raw.get("paper"),
        digest=_files_digest([path, *sources.values()], sets),
        leaderboard=P.build(LeaderboardSpec, raw.get("leaderboard"), at("leaderboard")),
        overrides=sets,
    )
    suite.eval_eps = _eval_eps(eval_eps, f"{at('eval')}.eps", suite.threat)
    if suite.zoo:  # a misspelt or mismatched reference row fails here, not at run time
        from bench.models.zoo import zoo_problem

        for i, entry in enumerate(suite.zoo):
            problem = zoo_problem(entry, suite.dataset.name, suite.threat.norm)
            if problem:
                raise ConfigError(f"{at('zoo')}[{i}]", problem)
    taken = [d.name for d in suite.defences] + suite.zoo
    base = Path(sources.get("checkpoints", path)).parent
    suite.checkpoints = _checkpoints(raw.get("checkpoints"), at("checkpoints"), base, suite.dataset, taken)
    if suite.checkpoints:  # a task names the weights it was planned with: an edited .pt is a changed suite
        suite.digest = hashlib.sha256(" ".join([suite.digest, *(c.digest for c in suite.checkpoints)]).encode()).hexdigest()
    return suite
