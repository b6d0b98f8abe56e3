"""Stand-ins shared by tests: a task as the estimator and the progress display see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FakeTask:
    kind: str
    key: str
    label: str = ""
    spec: dict = field(default_factory=dict)
    defence: Any = None
    attack: Any = None

    @property
    def epochs(self) -> int | None:  # as TrainJob's: the epochs it trains
        return self.spec.get("train", {}).get("epochs")
