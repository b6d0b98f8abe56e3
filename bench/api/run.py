"""plan -> run the tasks (claimed in the store) -> aggregate -> the results folder (``bench/report/folder.py``).

Each train task runs once per distinct training config, each (weights, attack) evaluation once,
across every process that shares the cache. A task that raises is reported with its traceback in
``<results>/<suite>/logs/`` and not cached; the rest of the grid still runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.api import rendered
from bench.core.errors import BenchError
from bench.core.files import default_cache_dir, write_json
from bench.core.progress import Progress
from bench.device.env import check_device, resolve_device
from bench.engine.executors import ExecutorConfig, WorkerSpec, make_executor
from bench.engine.scheduler import ScheduleResult, run_tasks
from bench.engine.store import Store
from bench.engine.worker import WorkerContext, check_externals
from bench.plan import kinds as task_kinds
from bench.plan.estimate import Estimator
from bench.plan.expand import expand
from bench.plan.tasks import Plan
from bench.report.aggregate import collect
from bench.report.folder import results_folder, write_folder
from bench.report.render import results_json, waiting_lines
from bench.report.rows import ResultRow
from bench.suite.load import load_suite
from bench.suite.specs import Suite

__all__ = ["RunSummary", "run_suite"]


@dataclass
class RunSummary:
    planned: int = 0
    trained: int = 0
    evaluated: int = 0
    cached_train: int = 0
    cached_eval: int = 0
    checked: int = 0
    cached_checks: int = 0
    analyzed: int = 0
    cached_analyses: int = 0
    reused: int = 0  # finished by another process while this one waited
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)  # tracebacks of the failed tasks
    results_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)  # the suite's --set KEY=VALUE

    @classmethod
    def of(cls, plan: Plan, result: ScheduleResult) -> RunSummary:
        c = result.count
        return cls(
            planned=len(plan.tasks),
            trained=c(task_kinds.TRAIN.name, "ran"),
            evaluated=c(task_kinds.EVAL.name, "ran"),
            cached_train=c(task_kinds.TRAIN.name, "cached"),
            cached_eval=c(task_kinds.EVAL.name, "cached"),
            checked=c(task_kinds.SANITY.name, "ran"),
            cached_checks=c(task_kinds.SANITY.name, "cached"),
            analyzed=c(task_kinds.ANALYSIS.name, "ran"),
            cached_analyses=c(task_kinds.ANALYSIS.name, "cached"),
            reused=sum(o.status == "reused" for o in result.outcomes),
            failures=[f"{o.task.label}: {o.error}" for o in result.failures],
            logs=[o.log for o in result.failures if o.log],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "trained": self.trained,
            "evaluated": self.evaluated,
            "cached_train": self.cached_train,
            "cached_eval": self.cached_eval,
            "checked": self.checked,
            "cached_checks": self.cached_checks,
            "analyzed": self.analyzed,
            "cached_analyses": self.cached_analyses,
            "reused": self.reused,
            "failed": len(self.failures),
            "seconds": round(self.seconds, 2),
            "overrides": self.overrides,
        }


def run_suite(
    suite: Suite | str | Path,
    cache_dir: str | Path | None = None,
    results_dir: str | Path = "results",
    device: str | torch.device = "auto",
    *,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    evaluate: bool = True,
    debug: bool = False,
    executor: ExecutorConfig | None = None,
    overrides: Any = None,
    plan: Plan | None = None,
) -> RunSummary:
    """Run (or resume) a suite and write ``<results_dir>/<suite name>/``; returns the counters.

    ``evaluate=False`` (``bench analyze``) trains what is missing and runs only the analyses.
    ``debug=True`` re-raises a failing task's exception instead of reporting it. ``executor``
    decides where tasks run (default: one after another in this process); see ``bench/engine/executors``.
    ``overrides`` (a suite given by path): ``{"train.epochs": 2}`` as in ``load_suite``. ``plan``: the
    suite already expanded with this ``limit`` (``bench run`` plans once, before its dry run), used as is.
    """
    start = time.perf_counter()
    if plan is not None:
        if suite is not plan.suite:
            raise BenchError(f"run_suite: plan= was expanded from suite {plan.suite.name!r}, not from the suite given")
        suite = plan.suite
    suite = suite if isinstance(suite, Suite) else load_suite(suite, overrides)
    plan = plan if plan is not None else expand(suite, limit)
    out = results_folder(results_dir, suite)
    config = executor or ExecutorConfig()
    store = Store(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())  # damage is reported even with --quiet
    data = str(Path(data_dir).expanduser()) if data_dir else None
    check_externals(plan, store, data)  # before anything runs: a bad file is one line, and nothing is computed
    config = config.resolved(str(device), plan.tasks, store.has)  # --workers auto: against the plan
    local = config.in_process  # in this process: the device is resolved here
    here = device if isinstance(device, torch.device) else resolve_device(device) if local else check_device(str(device))
    # the ETA before anything is measured: the FLOP model at the throughput `bench profile` measured on this device
    left = any(not store.has(t.kind, t.key) for t in plan.tasks)  # (checks are cached: the scheduler's are free)
    on = here or torch.device("cpu")
    prog = Progress(progress, estimator=Estimator.for_plan(plan, on, store.root, priors=left))
    ctx = WorkerContext(plan, store, here, data, prog) if local else None
    ex = make_executor(config, WorkerSpec(str(store.root.resolve()), str(device), data), ctx)
    prog.slots = ex.slots
    kinds = task_kinds.names(evaluate)
    counts = {k: sum(t.kind == k for t in plan.tasks) for k in kinds}
    shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n or not task_kinds.KINDS[k].rare)
    prog.log(f"suite {suite.name}: {sum(counts.values())} tasks ({shown}) on {ctx.device if ctx else ex.describe()}")
    for line in waiting_lines(plan):
        prog.log(line[2:])
    try:
        result = run_tasks(plan, store, ex, prog, out / "logs", kinds, debug)
    finally:
        prog.close()
        ex.close()
    summary = RunSummary.of(plan, result)
    summary.results_dir = out
    summary.overrides = list(suite.overrides)
    fast = not _ran(summary) and rendered.current(plan, store, out)  # a finished re-run: no evaluation read
    rows = [] if fast else collect(plan, store)
    if not rows and not fast:
        prog.log(f"nothing evaluated for {suite.name}: {out} left as it was")

    def run_json() -> dict[str, Any]:
        summary.seconds = time.perf_counter() - start
        return summary.as_json()

    if fast or _unchanged(summary, rows, out):  # a re-run of a finished suite: its figures and page are current
        write_json(out / "run.json", run_json())
    else:
        write_folder(plan, store, out, rows, run_json=run_json)
    if not fast:
        rendered.record(plan, store, out)
    return summary


def _ran(summary: RunSummary) -> int:
    """How many tasks this run computed, reused or lost (0: a re-run of a finished suite)."""
    return summary.trained + summary.evaluated + summary.analyzed + summary.checked + summary.reused + len(summary.failures)


def _unchanged(summary: RunSummary, rows: list[ResultRow], out: Path) -> bool:
    """Nothing ran and the results on disk are these rows, with their page: re-rendering would rewrite
    the same files (seconds of figure drawing), so a re-run skips it; ``bench report`` always renders."""
    if _ran(summary) or not rows or not (out / "index.html").is_file() or not (out / "results.json").is_file():
        return False
    return (out / "results.json").read_text() == results_json(rows)
