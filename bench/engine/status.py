"""``bench status SUITE``: what the cache and its claims say about a suite's tasks.

Each task is *done* (its entry is in the cache), *running* (a live claim: which host and process,
for how long), *failed* (no entry, no live claim, and a traceback log from the last run), or *left*.
Nothing is computed or changed.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.engine.store import Store
from bench.plan.tasks import Plan, readers, unneeded

STATES = ("done", "running", "failed", "left")


def suite_status(plan: Plan, store: Store, log_dir: Path) -> str:
    lines: list[str] = []
    counts = dict.fromkeys(STATES, 0)
    needed_by = readers(plan.tasks)
    for task in plan.tasks:
        info = store.claim_info(task.kind, task.key)
        log = log_dir / f"{task.kind}-{task.key[:12]}.log"
        if store.has(task.kind, task.key):
            state, detail = "done", ""
        elif unneeded(task, needed_by, store.has):
            state, detail = "done", "(not needed: what reads it is done)"
        elif info is not None and info.alive:
            state, detail = "running", f"on {info.where()} for {time.time() - info.started:.0f}s"
        elif log.is_file():
            state, detail = "failed", f"traceback: {log}"
        else:
            state, detail = "left", "" if all(store.has(k, d) for k, d in task.needs) else "(waits for what it needs)"
        counts[state] += 1
        lines.append(f"  {state:<8}{task.label} ({task.key[:12]}) {detail}".rstrip())
    head = f"suite {plan.suite.name} in {store.root}: " + ", ".join(f"{counts[s]} {s}" for s in STATES) + f" of {len(plan.tasks)} tasks"
    return "\n".join([head, *lines])
