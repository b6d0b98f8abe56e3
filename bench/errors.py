"""User-facing errors: each one prints as a single line and exits with code 2."""

from __future__ import annotations


class BenchError(Exception):
    """An error the user can fix; printed as one line, no traceback."""

    exit_code = 2


class ConfigError(BenchError):
    """A suite file is malformed; the message names the file and the field."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class DatasetMissingError(BenchError):
    """A dataset's files were not found in any of the searched places."""


class EvaluationError(BenchError):
    """An attack returned an invalid batch (outside the eps-ball or [0,1], or changed model mode)."""
