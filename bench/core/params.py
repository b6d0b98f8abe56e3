"""Strict, typed construction of frozen params dataclasses from YAML mappings.

Unknown keys and wrong types fail with the field named. Numbers may be written as fractions
(``8/255``) or decimals (``5e-4``); they are parsed exactly with :class:`fractions.Fraction`,
never with ``eval``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from fractions import Fraction
from typing import Any, Literal, Union

from bench.core.errors import ConfigError, show


def did_you_mean(value: Any, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a misspelt ``value``, else ``""``."""
    if not isinstance(value, str):
        return ""
    lower = {str(c).lower(): str(c) for c in choices}  # `linf` -> 'Linf'
    close = difflib.get_close_matches(value.lower(), list(lower), n=1)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


EPS_HINT = "the radius comes from the suite's threat.eps (and eval.eps for extra radii), never from a defence or attack"


def parse_fraction(value: Any, where: str) -> Fraction:
    """An exact number from an int, a float or a string such as ``"8/255"`` or ``"5e-4"``, within float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Fraction)):
        raise ConfigError(where, f"expected a number such as 0.1 or 8/255, got {_show(value)}")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(where, f"expected a finite number, got {value}")
        return Fraction(repr(value))
    if isinstance(value, str) and _BIG_EXPONENT.search(value):  # Fraction("1e999999999") computes 10**999999999
        raise ConfigError(where, f"out of range, got {show(value)}")
    try:
        number = Fraction(value.strip() if isinstance(value, str) else value)
    except ZeroDivisionError:
        raise ConfigError(where, f"division by zero in {show(value)}") from None
    except ValueError:
        raise ConfigError(where, f"expected a number such as 0.1 or 8/255, got {show(value)}") from None
    if abs(number) > sys.float_info.max:
        raise ConfigError(where, f"out of range, got {show(value)}")
    return number


_BIG_EXPONENT = re.compile(r"[eE][+-]?0*\d{4}")  # 1e1000 and beyond


def fraction_text(value: Fraction) -> str:
    """Canonical text of an exact number: ``8/255``, ``1/10``, ``2``."""
    return str(value)


def _show(value: Any) -> str:
    return f"{type(value).__name__} {show(value)}"


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if typ is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for alt in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, alt, where)
            except ConfigError as e:
                errors.append(e.message)
        raise ConfigError(where, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(where, f"expected one of {choices}, got {show(value)}{did_you_mean(value, args)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {_show(value)}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if typ is type(None):
        if value is None:
            return None
        raise ConfigError(where, f"expected null, got {_show(value)}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected true or false, got {_show(value)}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected an integer, got {_show(value)}")
    if typ is float:
        return float(parse_fraction(value, where))
    if typ is Fraction:
        return parse_fraction(value, where)
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(where, f"expected a string, got {_show(value)}")
    if dataclasses.is_dataclass(typ):
        return build(typ, value, where)
    raise TypeError(f"unsupported parameter type {typ!r} at {where}")  # a plug-in bug, not a user error


def build(cls: type, mapping: Any, where: str) -> Any:
    """Build the frozen dataclass ``cls`` from ``mapping`` (None = all defaults), strictly."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(where, f"expected a mapping of parameters, got {_show(mapping)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in mapping.items():
        sub = f"{where}.{key}" if where else str(key)
        if key not in fields:
            if key == "eps":
                raise ConfigError(sub, f"not a parameter: {EPS_HINT}")
            known = ", ".join(fields) or "none"
            raise ConfigError(sub, f"unknown key{did_you_mean(key, fields)}; allowed: {known}")
        kwargs[key] = _coerce(value, hints[key], sub)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(where, str(e).split(".__init__() ")[-1]) from None
    check = getattr(obj, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            field, message = problem
            raise ConfigError(f"{where}.{field}" if where else field, message)
    return obj


# Field metadata of a parameter added after caches existed: ``to_plain`` leaves it out at its default,
# so every key made before it stays valid (``eot: int = added_param(1)``); any other value is keyed.
ADDED = "bench_unkeyed_at_default"


def added_param(default: Any) -> Any:
    """A dataclass field with ``default`` that is absent from the plain (keyed) form at that default."""
    return dataclasses.field(default=default, metadata={ADDED: True})


def _plain_fields(obj: Any) -> dict[str, Any]:
    return {
        f.name: to_plain(getattr(obj, f.name))
        for f in dataclasses.fields(obj)
        if not (f.metadata.get(ADDED) and getattr(obj, f.name) == f.default)
    }


def to_plain(obj: Any) -> Any:
    """JSON-ready plain data: dataclasses to dicts (without added params at their default: ``added_param``),
    tuples to lists, Fractions to ``"a/b"``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain_fields(obj)
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Fraction):
        return fraction_text(obj)
    return obj


def non_defaults(obj: Any) -> dict[str, Any]:
    """The fields of a params dataclass that differ from its defaults (for display names)."""
    default = type(obj)()
    return {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if getattr(obj, f.name) != getattr(default, f.name)
    }


def range_problem(
    obj: Any, *, min1: tuple[str, ...] = (), positive: tuple[str, ...] = (), nonneg: tuple[str, ...] = ()
) -> tuple[str, str] | None:
    """The first out-of-range field, for params ``validate()`` methods: ``min1`` fields must be
    >= 1, ``positive`` > 0 and ``nonneg`` >= 0 (None passes the last two: "use the default")."""
    for name in min1:
        if getattr(obj, name) < 1:
            return name, "must be at least 1"
    for name in positive:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            return name, "must be > 0"
    for name in nonneg:
        value = getattr(obj, name)
        if value is not None and value < 0:
            return name, "must be >= 0"
    return None
