"""plan -> run the tasks (claimed in the store) -> aggregate -> render.

Each train task runs once per distinct training config, each (weights, attack) evaluation once,
across every process that shares the cache. A task that raises is reported with its traceback in
``<results>/<suite>/logs/`` and not cached; the rest of the grid still runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bench.analysis.run import render
from bench.api import rendered
from bench.core.errors import BenchError
from bench.core.files import default_cache_dir, write_json
from bench.core.progress import Progress
from bench.device.env import check_device, provenance, resolve_device
from bench.engine.executors import ExecutorConfig, WorkerSpec, make_executor
from bench.engine.scheduler import ScheduleResult, run_tasks
from bench.engine.store import Store
from bench.engine.worker import WorkerContext
from bench.plan.cost import estimates, measured
from bench.plan.plan import Plan, expand
from bench.report.aggregate import collect, collect_outcomes
from bench.report.figures import write_figures
from bench.report.html import write_index
from bench.report.render import NORMS, results_json, write_results
from bench.suite.config import Suite, load_suite


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
            trained=c("train", "ran"),
            evaluated=c("eval", "ran"),
            cached_train=c("train", "cached"),
            cached_eval=c("eval", "cached"),
            checked=c("sanity", "ran"),
            cached_checks=c("sanity", "cached"),
            analyzed=c("analysis", "ran"),
            cached_analyses=c("analysis", "cached"),
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


def cached_analyses(plan: Plan, store: Store, arrays: bool = True) -> list[dict[str, Any]]:
    """The plan's analyses found in the store: display, seed, metrics (and arrays)."""
    results = []
    for j in (j for j in plan.analysis_jobs if store.has("analysis", j.key)):
        item = {"display": j.display, "seed": j.seed, "metrics": store.read_json("analysis", j.key, "metrics.json")}
        if arrays:
            item["arrays"] = store.read_npz("analysis", j.key, "arrays.npz")
        results.append(item)
    return results


def render_analyses(plan: Plan, store: Store, out: Path) -> None:
    """``<out>/analysis/`` from the cached analyses of the plan (nothing when none are cached)."""
    results = cached_analyses(plan, store)
    if not results:
        return
    spec = plan.suite.analysis
    assert spec is not None
    render(results, out / "analysis", f"PGD-{spec.attack_steps}", plan.suite.threat)


def paper_report(plan: Plan, store: Store, fmt: str) -> str:
    """The suite's ``paper:`` table from the cache only, as md, latex or csv."""
    from bench.report import papers

    spec = plan.paper
    if spec.layout == "leaderboard":
        rows, outcomes = collect_outcomes(plan, store)
        values, ties = papers.leaderboard_values(rows), papers.leaderboard_ties(spec, outcomes)
    else:
        values, ties = papers.lpf_values(cached_analyses(plan, store, arrays=False)), None
    table = papers.build_cells(spec, values, ties)
    if fmt == "csv":
        return papers.render_csv(spec, table)
    suite, prov = plan.suite, provenance(torch.device("cpu"))
    n = plan.eval_spec.n_examples or "all"
    footer = [
        f"Source of the published values: {spec.source}.",
        f"Our protocol: suite `{suite.name}` ({suite.path}): {suite.dataset.name}, {suite.model.name}, {NORMS[suite.threat.norm]} ε = "
        f"{suite.threat.eps_text}, {suite.train.epochs} epochs, selection `{suite.train.selection}`, {n} test examples, "
        f"seeds {', '.join(map(str, suite.seeds))}.",
        *([spec.note] if spec.note else []),
        f"Generated by bench {prov['bench']} (git {str(prov['git_sha'])[:10]}, torch {prov['torch']}) from the cache; "
        f"{papers.MISSING} = not run yet.",
    ]
    render = papers.render_latex if fmt == "latex" else papers.render_markdown
    return render(spec, table, footer)


def write_page(plan: Plan, store: Store, out: Path, rows: list[dict[str, Any]]) -> Path:
    """``<out>/index.html`` from the files already rendered in ``out`` and the paper table (from the cache)."""
    return write_index(plan, rows, out, paper_report(plan, store, "md") if plan.paper is not None else None)


def results_folder(results_dir: str | Path, suite: Suite) -> Path:
    """``<results_dir>/<suite name>``, refusing a name that would leave the results directory."""
    base = Path(results_dir).expanduser().resolve()
    out = (base / suite.name).resolve()
    if out.parent != base:
        raise BenchError(f"{suite.path}: name: {suite.name!r} would write outside {base}")
    return out


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
) -> RunSummary:
    """Run (or resume) a suite and write ``<results_dir>/<suite name>/``; returns the counters.

    ``evaluate=False`` (``bench analyze``) trains what is missing and runs only the analyses.
    ``debug=True`` re-raises a failing task's exception instead of reporting it. ``executor``
    decides where tasks run (default: one after another in this process); see ``bench/executors``.
    ``overrides`` (a suite given by path): ``{"train.epochs": 2}`` as in ``load_suite``.
    """
    start = time.perf_counter()
    suite = suite if isinstance(suite, Suite) else load_suite(suite, overrides)
    plan = expand(suite, limit)
    out = results_folder(results_dir, suite)
    config = executor or ExecutorConfig()
    store = Store(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())  # damage is reported even with --quiet
    data = str(Path(data_dir).expanduser()) if data_dir else None
    if config.name == "local" and config.workers == "auto":
        from bench.engine.executors.local import auto_workers

        config = replace(config, workers=auto_workers(str(device), plan.tasks, store.has))
    local = config.name == "local" and config.workers == 1  # in this process: the device is resolved here
    here = device if isinstance(device, torch.device) else resolve_device(device) if local else check_device(str(device))
    # the ETA before anything is measured: the FLOP model at the throughput `bench profile` measured on this device
    left = any(not store.has(t.kind, t.key) for t in plan.tasks)  # (checks are cached: the scheduler's are free)
    on = here or torch.device("cpu")
    prior = estimates(plan, on, store.root) if left else {}
    prog = Progress(progress, estimates=prior, calibrated=measured(on, store.root))
    ctx = WorkerContext(plan, store, here, data, prog) if local else None
    ex = make_executor(config, WorkerSpec(str(store.root.resolve()), str(device), data), ctx)
    prog.slots = ex.slots
    kinds = ("prefix", "train", "analysis", "sanity", "shard", "eval") if evaluate else ("prefix", "train", "analysis")
    counts = {k: sum(t.kind == k for t in plan.tasks) for k in kinds}
    shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n or k not in ("prefix", "shard"))
    prog.log(f"suite {suite.name}: {sum(counts.values())} tasks ({shown}) on {ctx.device if ctx else ex.describe()}")
    try:
        result = run_tasks(plan, store, ex, prog, out / "logs", kinds, debug)
    finally:
        prog.close()
        ex.close()
    summary = RunSummary.of(plan, result)
    fast = not _ran(summary) and rendered.current(plan, store, out)  # a finished re-run: no evaluation read
    rows = [] if fast else collect(plan, store)
    unchanged = fast or _unchanged(summary, rows, out)  # a re-run of a finished suite: its figures and page are current
    if rows and not unchanged:
        write_results(plan, rows, out.parent)
    elif not rows and not fast:
        prog.log(f"nothing evaluated for {suite.name}: {out} left as it was")
    if not unchanged:
        render_analyses(plan, store, out)
        write_figures(plan, store, out)
    summary.seconds = time.perf_counter() - start
    summary.results_dir = out
    summary.overrides = list(suite.overrides)
    write_json(out / "run.json", summary.as_json())
    if (rows or (out / "analysis").is_dir()) and not unchanged:
        write_page(plan, store, out, rows)
    if not unchanged or not fast:
        rendered.record(plan, store, out)
    return summary


def _ran(summary: RunSummary) -> int:
    return summary.trained + summary.evaluated + summary.analyzed + summary.checked + summary.reused + len(summary.failures)


def _unchanged(summary: RunSummary, rows: list[dict[str, Any]], out: Path) -> bool:
    """Nothing ran and the results on disk are these rows, with their page: re-rendering would rewrite
    the same files (seconds of figure drawing), so a re-run skips it; ``bench report`` always renders."""
    if _ran(summary) or not rows or not (out / "index.html").is_file() or not (out / "results.json").is_file():
        return False
    return (out / "results.json").read_text() == results_json(rows)
