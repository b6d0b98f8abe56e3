"""Parsers of the suite's sections that are more than one params dataclass.

``seeds``, ``wa``, ``zoo``, ``checkpoints`` and ``eval.eps``: each takes the section as YAML
data and where it stands (for the one-line error), and returns typed specs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core import params as P
from bench.core.errors import ConfigError, show
from bench.registry import MODELS
from bench.suite.read import file_problem
from bench.suite.refs import parse_ref
from bench.suite.specs import CheckpointSpec, PluginRef, TrainSpec, WASpec
from bench.types import ThreatModel, parse_eps


def eval_eps(raw: Any, where: str, threat: ThreatModel) -> tuple[ThreatModel, ...]:
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


def seeds(raw: Any, where: str) -> list[int]:
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


def wa(raw: Any, where: str, train: TrainSpec) -> list[WASpec | None]:
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


def zoo(raw: Any, where: str, dataset: str, norm: str) -> list[str]:
    """``[robustbench:<name>, ...]``: reference rows, each checked against the suite's dataset and norm now."""
    if not isinstance(raw, list) or any(not isinstance(z, str) for z in raw):
        raise ConfigError(where, "expected a list such as [robustbench:Carmon2019Unlabeled]")
    for i, entry in enumerate(raw):
        if not entry.startswith("robustbench:") or len(entry) == len("robustbench:"):
            raise ConfigError(f"{where}[{i}]", f"expected robustbench:<model name>, got {show(entry)}")
    if len(set(raw)) != len(raw):
        raise ConfigError(where, "duplicate entries")
    if raw:  # a misspelt or mismatched reference row fails here, not at run time
        from bench.models.zoo import zoo_problem

        for i, entry in enumerate(raw):
            problem = zoo_problem(entry, dataset, norm)
            if problem:
                raise ConfigError(f"{where}[{i}]", problem)
    return list(raw)


def checkpoints(raw: Any, where: str, base: Path, dataset: PluginRef, taken: list[str]) -> list[CheckpointSpec]:
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
