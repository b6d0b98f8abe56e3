"""One registry class for every kind of plug-in (defences, attacks, datasets, models, corruptions).

A plug-in is a function, a frozen params dataclass and a name. Registering a name twice is an
error; an unknown name raises with "did you mean" suggestions and the list of known names.
Every entry carries an explicit ``version`` that is part of the cache keys: bump it whenever the
plug-in's results change.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from bench.core.errors import BenchError

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class NoParams:
    """Params dataclass for plug-ins without parameters."""


class RegistryError(BenchError):
    """Duplicate or unknown registry name."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    kind: str
    name: str
    fn: T
    params: type
    version: int
    doc: str
    caps: dict[str, Any] = field(default_factory=dict)

    def default_params(self) -> Any:
        return self.params()

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


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, params: type = NoParams, version: int, doc: str | None = None, **caps: Any
    ) -> Callable[[T], T]:
        if not dataclasses.is_dataclass(params) or not params.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise RegistryError(f"{self.kind} {name!r}: params must be a frozen dataclass")
        if not isinstance(version, int) or version < 1:
            raise RegistryError(f"{self.kind} {name!r}: version must be a positive int")

        def deco(fn: T) -> T:
            if name in self._entries:
                prev = self._entries[name].fn
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered (by {prev.__module__}.{prev.__qualname__})"
                )
            text = doc if doc is not None else (inspect.getdoc(fn) or "")
            self._entries[name] = Entry(self.kind, name, fn, params, version, text, dict(caps))
            return fn

        return deco

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


DEFENCES: Registry = Registry("defence")
ATTACKS: Registry = Registry("attack")
DATASETS: Registry = Registry("dataset")
MODELS: Registry = Registry("model")
CORRUPTIONS: Registry = Registry("corruption")  # bench/data/corruptions: not in REGISTRIES until suites use them

REGISTRIES: dict[str, Registry] = {
    "defences": DEFENCES,
    "attacks": ATTACKS,
    "datasets": DATASETS,
    "models": MODELS,
}
