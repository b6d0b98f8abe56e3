"""Fault injection for the crash tests: ``BENCH_FAULT=<point>`` SIGKILLs the process at that point.

Points: ``train-batch:<epoch>:<batch>`` (before a training step), ``train-ckpt:<epoch>`` (half-way
through writing that epoch's resume state), ``eval-batch:<k>`` (after k evaluated batches are saved).
``BENCH_PAUSE=<point>=<seconds>`` sleeps there instead (a race test holds a task mid-run while its
claim stays alive). Unset (always, outside the tests) each costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal
import time


def fault_point(name: str) -> None:
    if os.environ.get("BENCH_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    point, _, seconds = os.environ.get("BENCH_PAUSE", "").rpartition("=")
    if seconds and point == name:
        time.sleep(float(seconds))
