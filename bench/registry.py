"""One registry class for every kind of plug-in, and the typed contract of each kind.

A plug-in is a function, a frozen params dataclass, a name, an explicit ``version`` (part of the
cache keys: bump it whenever the plug-in's results change) and the fields of its kind's spec:

* :class:`AttackSpec` (``ATTACKS``): ``family`` (required), ``label``, ``eot``, ``cost``;
* :class:`DefenceSpec` (``DEFENCES``): ``selection``, ``shared_start``, ``presets``, ``train_cost``;
* :class:`DatasetSpec` (``DATASETS``): ``info``, ``sizes``, ``nominal``;
* :class:`ModelSpec` (``MODELS``): no extra fields; its params carry ``normalize``;
* :class:`CorruptionSpec` (``CORRUPTIONS``): ``family`` (required: noise, blur, weather or digital).

``@ATTACKS.register("name", params=P, version=1, family="iterative")`` checks the whole contract when
the plug-in is registered: a missing required field, an unknown field or a wrong value is a one-line
:class:`RegistryError` naming the plug-in and the field, never a ``KeyError`` in the middle of a run.
Registering a name twice is an error; an unknown name raises with "did you mean" suggestions.
The pages ``bench/attacks/README.md``, ``bench/data/README.md``, ``bench/models/README.md`` and
``defenses/README.md`` describe each contract with an example; ``tests/test_contracts.py`` runs them.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from bench.core.errors import BenchError

T = TypeVar("T", bound=Callable[..., Any])

FAMILIES = {
    "none": "no attack: the clean input",
    "fgsm": "one gradient step (the sanity flag compares iterative attacks against it)",
    "iterative": "iterated gradient steps (sanity flags; the spectral analysis attacks with it; EoT checks)",
    "ensemble": "a cascade of gradient attacks such as AutoAttack (EoT checks)",
    "blackbox": "queries only, no gradients (the flag raised when it beats every gradient attack)",
}  # an attack's ``family``: what the sanity flags, the analyses and the randomised-model checks treat it as


@dataclass(frozen=True)
class NoParams:
    """Params dataclass for plug-ins without parameters."""


class RegistryError(BenchError):
    """Duplicate or unknown registry name, or a plug-in that breaks its kind's contract."""


def _callable_or_none(value: Any) -> str | None:
    return None if value is None or callable(value) else f"expected a function, got {value!r}"


@dataclass(frozen=True, kw_only=True)
class Entry(Generic[T]):
    """A registered plug-in: the fields every kind has. Each kind's spec adds its own."""

    kind: str
    name: str
    fn: T
    params: type
    version: int
    doc: str

    call: ClassVar[tuple[str, ...]] = ()  # the arguments ``fn`` is called with (checked at registration)

    def check(self) -> tuple[str, str] | None:
        """(field, problem) for a value the kind does not accept; None when the entry is valid."""
        return None

    @property
    def caps(self) -> dict[str, Any]:
        """The kind's own fields by name (read them as attributes: ``ATTACKS.get(n).family``)."""
        base = {f.name for f in dataclasses.fields(Entry)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in base}

    def default_params(self) -> Any:
        return self.params()

    def facts(self) -> list[str]:
        """What ``bench ls`` shows of the kind's own fields, at the default params."""
        return []

    def param_fields(self) -> list[tuple[str, str, Any]]:
        """(name, type text, default) for each parameter, for `bench ls`."""
        out = []
        for f in dataclasses.fields(self.params):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            out.append((f.name, typ, default))
        return out

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""


@dataclass(frozen=True, kw_only=True)
class AttackSpec(Entry):
    """An attack: ``fn(model, x, y, threat, params) -> x_adv`` on [0,1] inputs (``bench/attacks/README.md``)."""

    family: str  # required: one of FAMILIES
    label: Callable[..., str] | None = None  # label(params[, norm]) -> column label; default NAME.upper()
    eot: Callable[[Any], int] | None = None  # eot(params) -> forward-backward passes per step; default 1
    cost: Callable[[Any], float] | None = None  # cost(params) -> forward-equivalents per attacked image; default PGD-20's 41

    call: ClassVar[tuple[str, ...]] = ("model", "x", "y", "threat", "params")

    def facts(self) -> list[str]:
        p = self.params()
        cost = f"{self.cost(p):g} forward-equivalents per attacked image at the defaults" if self.cost else "no declared cost (estimated as PGD-20)"
        return [f"family {self.family}", cost]

    def check(self) -> tuple[str, str] | None:
        if self.family not in FAMILIES:
            return "family", f"unknown {self.family!r} (known: {', '.join(FAMILIES)})"
        for name in ("label", "eot", "cost"):
            problem = _callable_or_none(getattr(self, name))
            if problem:
                return name, problem
        return None


@dataclass(frozen=True, kw_only=True)
class DefenceSpec(Entry):
    """A defence: ``fn(model, x, y, params, ctx) -> LossOut``, a pure loss (``defenses/README.md``)."""

    selection: str = "robust"  # best_val selects on validation PGD accuracy ("robust") or clean accuracy ("clean")
    shared_start: Callable[[Any, int], Any] | None = None  # (params, first_milestone) -> SharedStart | None
    presets: Mapping[str, Any] = field(default_factory=dict)  # name -> a params instance (`trades: {preset: official}`)
    train_cost: Callable[[Any], float] | None = None  # train_cost(params) -> forward-equivalents per training image;
    # default 2 * params.steps + 3 (a PGD crafting of ``steps`` at 2 each, one training step at 3)

    call: ClassVar[tuple[str, ...]] = ("model", "x", "y", "params", "ctx")

    def facts(self) -> list[str]:
        cost = f"{self.train_cost(self.params()):g} forward-equivalents per training image at the defaults" if self.train_cost else "no declared cost"
        return [f"best_val selects on {self.selection} accuracy", cost, *([f"presets: {', '.join(self.presets)}"] if self.presets else [])]

    def check(self) -> tuple[str, str] | None:
        if self.selection not in ("robust", "clean"):
            return "selection", f"expected robust or clean, got {self.selection!r}"
        if not isinstance(self.presets, Mapping) or not all(isinstance(v, self.params) for v in self.presets.values()):
            return "presets", f"expected a mapping of preset name to a {self.params.__name__} instance"
        for name in ("shared_start", "train_cost"):
            problem = _callable_or_none(getattr(self, name))
            if problem:
                return name, problem
        return None


@dataclass(frozen=True, kw_only=True)
class DatasetSpec(Entry):
    """A dataset: ``fn(params, roots) -> DatasetSplits`` of uint8 images (``bench/data/README.md``)."""

    info: Any = None  # a DatasetInfo, or info(params) -> DatasetInfo: classes, shape, mean, std without the files
    sizes: tuple[int, int] | None = None  # (train, test) examples, for the estimates; default (50000, 10000)
    nominal: tuple[tuple[int, int, int], int] | None = None  # (shape, classes) for the estimates when ``info``
    # is not a DatasetInfo; default ((3, 32, 32), 10)

    call: ClassVar[tuple[str, ...]] = ("params", "roots")

    def facts(self) -> list[str]:
        return [f"{self.sizes[0]:,} train / {self.sizes[1]:,} test images"] if self.sizes else []

    def check(self) -> tuple[str, str] | None:
        if self.info is not None and not callable(self.info) and not hasattr(self.info, "num_classes"):
            return "info", f"expected a DatasetInfo or a function of the params, got {self.info!r}"
        if self.sizes is not None and not (
            isinstance(self.sizes, tuple) and len(self.sizes) == 2 and all(isinstance(n, int) and n > 0 for n in self.sizes)
        ):
            return "sizes", f"expected (train, test) positive counts, got {self.sizes!r}"
        if self.nominal is not None and not (isinstance(self.nominal, tuple) and len(self.nominal) == 2 and len(self.nominal[0]) == 3):
            return "nominal", f"expected ((channels, height, width), classes), got {self.nominal!r}"
        return None


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Entry):
    """A model: ``fn(params, num_classes, shape) -> nn.Module`` on normalised inputs (``bench/models/README.md``)."""

    call: ClassVar[tuple[str, ...]] = ("params", "num_classes", "shape")

    def check(self) -> tuple[str, str] | None:
        if "normalize" not in {f.name for f in dataclasses.fields(self.params)}:
            return "params", "must derive from bench.models.ModelParams (a `normalize` field)"
        return None


CORRUPTION_FAMILIES = ("noise", "blur", "weather", "digital")  # the four groups of Hendrycks & Dietterich (2019)


@dataclass(frozen=True, kw_only=True)
class CorruptionSpec(Entry):
    """A common corruption: ``fn(x, severity, seeds) -> x`` on float [0,1] images, seeded per sample (``bench/data/corruptions``)."""

    family: str  # required: one of CORRUPTION_FAMILIES

    call: ClassVar[tuple[str, ...]] = ("x", "severity", "seeds")

    def facts(self) -> list[str]:
        return [f"family {self.family}", "severities 1-5"]

    def check(self) -> tuple[str, str] | None:
        if self.family not in CORRUPTION_FAMILIES:
            return "family", f"unknown {self.family!r} (known: {', '.join(CORRUPTION_FAMILIES)})"
        return None


def _required(spec: type) -> list[str]:
    base = {f.name for f in dataclasses.fields(Entry)}
    return [
        f.name for f in dataclasses.fields(spec)
        if f.name not in base and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]  # fmt: skip


def _takes(fn: Callable[..., Any], names: tuple[str, ...]) -> bool:
    try:
        inspect.signature(fn).bind(*names)
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): cannot tell
        return True
    return True


class Registry(Generic[T]):
    """The plug-ins of one kind, each an entry of ``spec`` (a subclass of :class:`Entry`)."""

    def __init__(self, kind: str, spec: type[Entry] = Entry) -> None:
        self.kind = kind
        self.spec = spec
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, params: type = NoParams, version: int, doc: str | None = None, **fields: Any
    ) -> Callable[[T], T]:
        """A decorator registering ``fn`` under ``name``; the spec's fields are keyword arguments."""
        where = f"{self.kind} {name!r}"
        if not dataclasses.is_dataclass(params) or not params.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise RegistryError(f"{where}: params must be a frozen dataclass")
        if not isinstance(version, int) or version < 1:
            raise RegistryError(f"{where}: version must be a positive int")
        known = [f.name for f in dataclasses.fields(self.spec) if f.name not in {g.name for g in dataclasses.fields(Entry)}]
        for key in fields:
            if key not in known:
                raise RegistryError(f"{where}: unknown field {key!r} (a {self.kind} takes {', '.join(known) or 'none'})")
        for key in _required(self.spec):
            if key not in fields:
                raise RegistryError(f"{where}: missing required field {key!r} ({self._field_hint(key)})")
        probe = self.spec(kind=self.kind, name=name, fn=None, params=params, version=version, doc="", **fields)
        problem = probe.check()
        if problem:
            raise RegistryError(f"{where}: {problem[0]}: {problem[1]}")

        def deco(fn: T) -> T:
            if name in self._entries:
                prev = self._entries[name].fn
                raise RegistryError(f"{where} is already registered (by {prev.__module__}.{prev.__qualname__})")
            if not callable(fn) or (self.spec.call and not _takes(fn, self.spec.call)):
                raise RegistryError(f"{where}: {getattr(fn, '__name__', fn)} must take ({', '.join(self.spec.call)})")
            text = doc if doc is not None else (inspect.getdoc(fn) or "")
            self._entries[name] = dataclasses.replace(probe, fn=fn, doc=text)
            return fn

        return deco

    def _field_hint(self, key: str) -> str:
        if key == "family":
            return f"one of {', '.join(CORRUPTION_FAMILIES if self.spec is CorruptionSpec else FAMILIES)}"
        return f"see {self.spec.__name__}"

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def unregister(self, name: str) -> None:
        """For tests only."""
        self._entries.pop(name, None)


DEFENCES: Registry = Registry("defence", DefenceSpec)
ATTACKS: Registry = Registry("attack", AttackSpec)
DATASETS: Registry = Registry("dataset", DatasetSpec)
MODELS: Registry = Registry("model", ModelSpec)
CORRUPTIONS: Registry = Registry("corruption", CorruptionSpec)  # bench/data/corruptions (suite entries: bench/suite/columns.py)

REGISTRIES: dict[str, Registry] = {
    "defences": DEFENCES,
    "attacks": ATTACKS,
    "datasets": DATASETS,
    "models": MODELS,
    "corruptions": CORRUPTIONS,
}
