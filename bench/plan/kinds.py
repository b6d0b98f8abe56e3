"""The task kinds, declared once: each kind's name and the files its store entry holds.

A suite is planned into tasks of six kinds (``bench/plan/plan.py``); each task writes one store entry
``<kind>/<key>/`` (``bench/engine/store.py``). This module is the one place that lists the kinds and
their entry layouts; everything that loops over kinds (the scheduler, ``bench status``, the dry run,
``bench run``'s task counts, ``bench cache ls/verify/gc/show``, the estimates) takes them from
:data:`KINDS`, and the typed reads and writes of each entry (``bench/engine/entries.py``) take the
file names from here. Declaring a kind here (:func:`declare`) is what makes the store accept it.

The file names below are the on-disk format of existing caches: they never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

# the files of the entries (shared by several kinds)
SPEC = "spec.json"  # what the entry was computed from (its key is the digest of it)
MANIFEST = "manifest.json"  # how and where it was computed: seconds, provenance, source hashes
METRICS = "metrics.json"
FLAGS = "flags.npz"  # per-sample flags: sample_id, clean, robust
CHECKS = "checks.json"
ARRAYS = "arrays.npz"
LOG = "log.jsonl"  # a training run's per-epoch log
STATE = "state.pt"  # a shared start's training state (``bench.training.train.TrainState.FILE``)
WEIGHTS = "weights/{tag}/{checkpoint}.pt"  # a training run's weights: raw or averaged, per checkpoint


def weights_file(tag: str, checkpoint: str) -> str:
    """The file of a training entry holding the ``tag`` (``raw``, ``<averager>-<digest>``) weights at ``checkpoint``."""
    return WEIGHTS.format(tag=tag, checkpoint=checkpoint)


@dataclass(frozen=True)
class Kind:
    """A task kind and its entry.

    ``files``: the file names (or ``*`` patterns, one per path segment) its entry may hold;
    ``optional``: those of them an entry may lack (every other one is in every entry).
    ``timed_as``: the kind whose measured durations and FLOP/s estimate this one (a prefix's epochs are
    training epochs). ``evaluates``: skipped by ``bench run --no-eval``. ``rare``: only some suites
    have tasks of this kind; ``bench run``'s count line names it only when there are some.
    """

    name: str
    files: tuple[str, ...]
    optional: tuple[str, ...] = ()
    timed_as: str = ""
    evaluates: bool = False
    rare: bool = False
    doc: str = field(default="", compare=False)

    @property
    def measured_as(self) -> str:
        """The kind whose measurements estimate this one's tasks (itself unless ``timed_as`` says otherwise)."""
        return self.timed_as or self.name

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f for f in self.files if f not in self.optional)

    def declares(self, name: str) -> bool:
        """Whether ``name`` (a path inside the entry, ``/``-separated) is one of the entry's files."""
        return any(_match(f, name) for f in self.files)

    def problems(self, names: list[str]) -> list[str]:
        """What is wrong with an entry holding files ``names``: undeclared files, required ones missing."""
        out = [f"{n} is not a file of a {self.name} entry" for n in names if not self.declares(n)]
        return out + [f"no {f}" for f in self.required if not any(_match(f, n) for n in names)]


def _match(pattern: str, name: str) -> bool:
    """``name`` matches ``pattern`` segment by segment (a ``*`` never spans a ``/``)."""
    parts, p = name.split("/"), pattern.split("/")
    return len(parts) == len(p) and all(map(fnmatchcase, parts, p))


PREFIX = Kind("prefix", (STATE, SPEC, MANIFEST), timed_as="train", rare=True,
              doc="the epochs several trainings share, trained once (a shared start)")  # fmt: skip
TRAIN = Kind("train", (SPEC, LOG, "weights/*/*.pt", MANIFEST), optional=("weights/*/*.pt",), doc="one training run")
ANALYSIS = Kind("analysis", (ARRAYS, METRICS), doc="the spectral analysis of one run's weights")
SANITY = Kind("sanity", (CHECKS,), evaluates=True, doc="the gradient-masking checks of one set of weights")
SHARD = Kind("shard", (FLAGS, SPEC, METRICS, MANIFEST), evaluates=True, rare=True,
             doc="a slice of an evaluation's batches (eval.shards)")  # fmt: skip
EVAL = Kind("eval", (FLAGS, SPEC, METRICS, MANIFEST), evaluates=True, doc="one (weights, attack) evaluation")

# name -> kind, in the order a suite's work runs (what `bench run` counts, and the cache lists, in)
KINDS: dict[str, Kind] = {k.name: k for k in (PREFIX, TRAIN, ANALYSIS, SANITY, SHARD, EVAL)}


def declare(kind: Kind) -> Kind:
    """Add a kind (the store accepts its entries; status, cache listings and estimates see it)."""
    if kind.name in KINDS and KINDS[kind.name] != kind:
        raise ValueError(f"task kind {kind.name!r} is already declared differently")
    KINDS[kind.name] = kind
    return kind


def names(evaluate: bool = True) -> tuple[str, ...]:
    """The names of the kinds (without those that evaluate when ``evaluate`` is False)."""
    return tuple(k.name for k in KINDS.values() if evaluate or not k.evaluates)


def kind_of(task: Any) -> Kind:
    """The declared kind of a task (anything with a ``kind`` name)."""
    return KINDS[task.kind]


def measured_as(task: Any) -> str:
    """The kind whose measurements and FLOP/s estimate ``task``: a prefix's epochs are training epochs."""
    kind = KINDS.get(task.kind)
    return kind.measured_as if kind is not None else task.kind
