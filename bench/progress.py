"""Live progress: tqdm bars on an interactive terminal, plain status lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress:
    """Reports progress to stderr. ``enabled=False`` silences everything (library use, tests)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()

    def log(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def bar(self, items: Iterable[T], total: int, desc: str) -> Iterator[T]:
        """Iterate with a bar on a terminal; elsewhere, one line when a long loop finishes."""
        if self.tty:
            yield from tqdm(items, total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
            return
        start = time.perf_counter()
        yield from items
        if self.enabled and time.perf_counter() - start > 30:
            self.log(f"  {desc}: {total} batches in {time.perf_counter() - start:.0f}s")
