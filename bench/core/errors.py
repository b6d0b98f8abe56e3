"""User-facing errors: each one prints as a single line and exits with code 2."""

from __future__ import annotations

import reprlib
from typing import Any

_SHOW = reprlib.Repr()  # keyword arguments need Python 3.12
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 2, 60, 60
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 4


def show(value: Any) -> str:
    """A short repr for error messages, bounded whatever the value (10^9 aliased items, huge ints)."""
    try:
        return _SHOW.repr(value)
    except ValueError:  # it holds an int too long to print in decimal
        return f"<{type(value).__name__} too large to show>"


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (``\\n``, ``\\x00``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class BenchError(Exception):
    """An error the user can fix; printed as one line, no traceback."""

    exit_code = 2

    def __str__(self) -> str:
        return one_line(super().__str__())


class ConfigError(BenchError):
    """A suite file is malformed; the message names the file and the field."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)

    def naming(self, overrides: tuple[str, ...]) -> ConfigError:
        """This error with the ``--set`` overrides named after its file, unless it names one already: an
        error between keys (a WA start after a changed schedule) may come from an override of another key."""
        if not overrides or "--set" in self.where:
            return self
        file, sep, field = self.where.partition(": ")
        return ConfigError(f"{file} (with{''.join(f' --set {o}' for o in overrides)}){sep}{field}", self.message)


class DatasetMissingError(BenchError):
    """A dataset's files were not found in any of the searched places."""


class EvaluationError(BenchError):
    """An attack returned an invalid batch (outside the eps-ball or [0,1], or changed model mode)."""
