"""Suite file -> :class:`~bench.suite.specs.Suite`, strictly: the one entry to the suite package.

* The file and its includes are read (``read.py``), ``--set`` overrides applied (``overrides.py``),
  the suite's ``plugins:`` imported (``refs.py``), then every section parsed into typed specs
  (``specs.py``, ``refs.py``, ``sections.py``, ``paper.py``) and checked against the others.
* Unknown keys, wrong types and out-of-range values fail with one line naming the file and the
  field; unknown plug-in names fail with a "did you mean".
* eps and other numbers may be written as fractions (``8/255``), parsed exactly with ``Fraction``.

Every check that needs only the suite is made here; the planner (``bench/plan/expand.py``) checks
only what needs the plan's rows and columns (``analysis.rows``, the paper table's rows and columns).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from bench.core import params as P
from bench.core.errors import ConfigError, show
from bench.registry import DATASETS, DEFENCES, MODELS
from bench.suite import sections
from bench.suite.columns import parse_entries
from bench.suite.overrides import Overrides, apply_overrides, normalize_overrides
from bench.suite.paper import read_paper
from bench.suite.read import load_raw
from bench.suite.refs import load_plugins, parse_ref, parse_ref_list
from bench.suite.specs import AnalysisSpec, EvalSpec, LeaderboardSpec, Suite, TrainSpec
from bench.types import parse_threat

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

    def at(key: str) -> str:
        """Where a top-level key was set: its file, and the ``--set`` overrides that changed it."""
        return f"{sources.get(key, path)}{f' (with{touched[key]})' if key in touched else ''}: {key}"

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

    # the typed specs (bench/core/params.py builds each one): the threat, then the sections that are one params dataclass
    threat = parse_threat(raw["threat"], at("threat"))
    raw_eval, eval_eps = raw.get("eval"), None
    if isinstance(raw_eval, dict):  # eval.eps is not part of the eval spec (nor of its cache key): each radius is its own job
        eval_eps = raw_eval.get("eps")
        raw_eval = {k: v for k, v in raw_eval.items() if k != "eps"}
    raw_analysis = raw.get("analysis")
    train = P.build(TrainSpec, raw.get("train"), at("train"))
    ev = P.build(EvalSpec, raw_eval, at("eval"))
    analysis = None if raw_analysis is None or raw_analysis is False else P.build(AnalysisSpec, raw_analysis if raw_analysis is not True else {}, at("analysis"))
    leaderboard = P.build(LeaderboardSpec, raw.get("leaderboard"), at("leaderboard"))
    # the plug-ins it names (bench/suite/refs.py), then the sections with parsers of their own (bench/suite/sections.py)
    dataset = parse_ref(DATASETS, raw["dataset"], at("dataset"))
    raw_attacks = [] if raw.get("attacks") is None else raw["attacks"]  # attacks, and corruption and external columns
    attacks, corruptions, externals = parse_entries(raw_attacks, at("attacks"), Path(sources.get("attacks", path)).parent, dataset.name)
    suite = Suite(
        name=name,
        path=path,
        dataset=dataset,
        model=parse_ref(MODELS, raw["model"], at("model")),
        threat=threat,
        train=train,
        defences=parse_ref_list(DEFENCES, raw["defences"], at("defences"), allow_empty=bool(raw.get("checkpoints"))),
        attacks=attacks,
        eval=ev,
        seeds=sections.seeds(raw.get("seeds", [0]), at("seeds")),
        zoo=sections.zoo(raw.get("zoo", []), at("zoo"), dataset.name, threat.norm),
        wa=sections.wa(raw.get("wa", ["none"]), at("wa"), train),
        plugins=list(plugins),
        analysis=analysis,
        sources=sources,
        leaderboard=leaderboard,
        overrides=sets,
    )
    taken = [d.name for d in suite.defences] + suite.zoo
    base = Path(sources.get("checkpoints", path)).parent
    suite.checkpoints = sections.checkpoints(raw.get("checkpoints"), at("checkpoints"), base, dataset, taken)
    suite.corruptions, suite.externals = corruptions, externals
    if leaderboard.mce_reference is not None and not suite.corruptions:
        raise ConfigError(f"{at('leaderboard')}.mce_reference", "needs corruption columns (- corruption: ... in attacks)")
    # what a task names: the files, the overrides and (an edited .pt is a changed suite) the checkpoints' weights and external files
    suite.digest = files_digest([path, *sources.values()], sets, [c.digest for c in suite.checkpoints] + [e.digest for e in suite.externals])
    # checks between sections
    if ev.cascade and any(a.shards > 1 for a in suite.attacks):
        raise ConfigError(f"{sources.get('eval', path)}: eval.cascade", "cannot be combined with sharded attacks (shards: N)")
    if raw.get("paper") is not None:  # its rows and columns are checked against the plan by the planner
        suite.paper = read_paper(raw["paper"], f"{sources.get('paper', path)}: paper")
    suite.eval_eps = sections.eval_eps(eval_eps, f"{at('eval')}.eps", threat)
    return suite


def files_digest(paths: list[str | Path], overrides: tuple[str, ...] = (), weights: list[str] | None = None) -> str:
    """sha256 over the suite file, its includes and the ``--set`` overrides, then with the digests of the
    ``checkpoints:`` weights when it has any: a task planned from them names this digest."""
    h = hashlib.sha256()
    for p in sorted({str(Path(p).resolve()) for p in paths}):
        h.update(p.encode() + b"\0" + Path(p).read_bytes() + b"\0")
    for item in overrides:  # none: the digest of the files alone, as before
        h.update(b"--set\0" + item.encode() + b"\0")
    digest = h.hexdigest()
    if weights:  # a task names the weights it was planned with
        digest = hashlib.sha256(" ".join([digest, *weights]).encode()).hexdigest()
    return digest
