"""plan -> train -> evaluate -> aggregate -> render, with the content-addressed cache.

Each train job runs once per distinct training config; each (weights, attack) evaluation runs
once. A job that raises is reported and not cached; the rest of the grid still runs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.aggregate import collect, collect_outcomes
from bench.config import Suite, WASpec, load_suite
from bench.data import load_dataset
from bench.env import provenance, resolve_device
from bench.errors import BenchError, DatasetMissingError
from bench.evaluate import robust_flags, subset_indices
from bench.models import build
from bench.models.zoo import load_zoo_model
from bench.analysis.run import analyze, render
from bench.plan import AnalysisJob, EvalJob, Plan, SanityJob, TrainJob, expand
from bench.progress import Progress
from bench.registry import ATTACKS, DEFENCES
from bench.render import NORMS, write_results
from bench.report_figures import write_figures
from bench.sanity import sanity_checks
from bench.store import Store, default_cache_dir, write_json
from bench.params import to_plain
from bench.train import Selection, TrainData, prepare_data, train_model
from bench.types import DatasetSplits


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
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    results_dir: Path | None = None

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
            "failed": len(self.failures),
            "seconds": round(self.seconds, 2),
        }


def source_sha(fn: Any) -> str | None:
    try:
        return hashlib.sha256(Path(inspect.getsourcefile(fn) or "").read_bytes()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def train_status(store: Store, job: TrainJob) -> tuple[bool, tuple[WASpec, ...]]:
    """Whether the raw run is cached, and which requested averagers are not recorded yet."""
    if job.zoo:
        return True, ()  # nothing to train
    return store.has("train", job.key), tuple(w for w in job.averagers if not store.has("wa", job.wa_key(w)))


class Runner:
    def __init__(self, plan: Plan, store: Store, device: torch.device, data_dir: str | None, progress: Progress):
        self.plan, self.store, self.device, self.data_dir, self.progress = plan, store, device, data_dir, progress
        self._splits: DatasetSplits | None = None
        self._train_data: TrainData | None = None
        self._zoo: dict[str, torch.nn.Module] = {}
        self._test: dict[int, tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}
        self._prov = provenance(device)

    @property
    def splits(self) -> DatasetSplits:
        if self._splits is None:
            suite = self.plan.suite
            self._splits = load_dataset(suite.dataset.name, suite.dataset.params, self.data_dir)
        return self._splits

    def train(self, job: TrainJob, write_raw: bool, averagers: tuple[WASpec, ...]) -> None:
        """Run the training loop once; store the raw run (if new) and the requested averages."""
        if self._train_data is None:
            self._train_data = prepare_data(self.splits, self.plan.suite, self.device)
        result = train_model(
            job, self.plan.suite, self.splits, self._train_data, self.device, self.progress, averagers
        )
        manifest = {
            "seconds": round(result.seconds, 3),
            "defence_source_sha": source_sha(DEFENCES.get(job.defence.name).fn),
            "data_source": self.splits.source,
            "provenance": self._prov,
        }
        for wa, selection in result.averaged.items():
            with self.store.writer("wa", job.wa_key(wa)) as tmp:
                self._write_weights(tmp, selection, {"train_key": job.key, "wa": to_plain(wa), **manifest})
        if write_raw:
            with self.store.writer("train", job.key) as tmp:
                write_json(tmp / "spec.json", job.spec)
                (tmp / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.log))
                averaged = [to_plain(w) for w in result.averaged]
                self._write_weights(tmp, result.raw, {**manifest, "averagers_recorded": averaged})

    @staticmethod
    def _write_weights(tmp: Path, selection: Selection, manifest: dict[str, Any]) -> None:
        for name, state in selection.states.items():
            torch.save(state, tmp / f"model_{name}.pt")
        manifest = {**manifest, "best_epoch": selection.best_epoch, "weights": sorted(selection.states)}
        write_json(tmp / "manifest.json", manifest)

    def test_data(self, n: int | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The evaluated test examples (ids into the test set, uint8 inputs, labels) on the device.

        ``n`` takes the first n of the suite's seeded subset: subsets are nested, so per-sample
        flags of attacks run on different sizes align on their common ids.
        """
        ev, splits = self.plan.eval_spec, self.splits
        total = len(splits.test_y) if ev.n_examples is None else min(ev.n_examples, len(splits.test_y))
        n = total if n is None else min(n, total)
        if n not in self._test:
            ids = subset_indices(len(splits.test_y), n, ev.subset_seed)
            index = torch.from_numpy(ids)
            self._test[n] = (ids, splits.test_x[index].to(self.device), splits.test_y[index].to(self.device))
        return self._test[n]

    def load_model(self, train: TrainJob, wa: WASpec | None, checkpoint: str) -> torch.nn.Module:
        suite = self.plan.suite
        if train.zoo:
            if train.key not in self._zoo:
                self._zoo[train.key] = load_zoo_model(train.defence.name, suite.dataset.name, self.store.root / "zoo", self.device)
            return self._zoo[train.key]
        info = self.splits.info
        model = build(suite.model.name, suite.model.params, info.num_classes, info.shape, info.mean, info.std)
        kind, key = ("wa", train.wa_key(wa)) if wa else ("train", train.key)
        model.load_state_dict(self.store.load_weights(kind, key, f"model_{checkpoint}.pt", self.device))
        return model.to(self.device)

    def check(self, job: SanityJob) -> None:
        _, x, y = self.test_data()
        model = self.load_model(job.train, job.wa, job.checkpoint)
        torch.manual_seed(int(job.key[:8], 16))
        checks = sanity_checks(model, x, y, self.plan.eval_spec.batch_size)
        with self.store.writer("sanity", job.key) as tmp:
            write_json(tmp / "checks.json", checks)

    def analyze(self, job: AnalysisJob) -> None:
        spec = self.plan.suite.analysis
        assert spec is not None
        _, x, y = self.test_data(spec.n_images)
        model = self.load_model(job.train, job.wa, job.checkpoint)
        threat = self.plan.suite.threat
        attacks = {
            column: (lambda m, xb, yb, fn=ATTACKS.get(a.name).fn, p=a.params: fn(m, xb, yb, threat, p))
            for a, column in zip(self.plan.attacks, self.plan.columns)
            if ATTACKS.get(a.name).caps["family"] in ("fgsm", "iterative")
        }
        arrays, metrics = analyze(model, x.float() / 255, y, threat, spec, int(job.key[:8], 16), attacks)
        with self.store.writer("analysis", job.key) as tmp:
            np.savez_compressed(tmp / "arrays.npz", **arrays)
            write_json(tmp / "metrics.json", metrics)
        self.progress.log(
            f"  analysis {job.display} seed={job.train.seed}: low-frequency energy "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics["energy"].items())
        )

    def evaluate(self, job: EvalJob) -> None:
        suite, ev = self.plan.suite, self.plan.eval_spec
        ids, x, y = self.test_data(job.attack.n_examples)
        model = self.load_model(job.train, job.wa, job.checkpoint)
        entry = ATTACKS.get(job.attack.name)
        threat = job.threat or suite.threat
        torch.manual_seed(int(job.key[:8], 16))  # attack randomness is a function of the eval key
        flags = robust_flags(
            model, x, y, lambda m, xb, yb: entry.fn(m, xb, yb, threat, job.attack.params),
            threat.eps_float, ev.batch_size, f"{job.display}/{job.column}", self.progress, threat.norm,
        )  # fmt: skip
        with self.store.writer("eval", job.key) as tmp:
            np.savez_compressed(tmp / "flags.npz", sample_id=ids.astype(np.int32), clean=flags.clean, robust=flags.robust)
            write_json(tmp / "spec.json", job.spec)
            metrics = {
                "n": len(ids),
                "clean_acc": flags.clean_acc,
                "robust_acc": flags.robust_acc,
                "max_dist": flags.max_dist,
                "seconds": round(flags.seconds, 3),
            }
            write_json(tmp / "metrics.json", metrics)
            write_json(tmp / "manifest.json", {"attack_source_sha": source_sha(entry.fn), "provenance": self._prov})
        self.progress.log(
            f"  eval {job.display} seed={job.train.seed} {job.column}: "
            f"clean {100 * flags.clean_acc:.2f}%, robust {100 * flags.robust_acc:.2f}% ({flags.seconds:.1f}s)"
        )


def cached_analyses(plan: Plan, store: Store, arrays: bool = True) -> list[dict[str, Any]]:
    """The plan's analyses found in the store: display, seed, metrics (and arrays)."""
    results = []
    for j in (j for j in plan.analysis_jobs if store.has("analysis", j.key)):
        item = {"display": j.display, "seed": j.train.seed, "metrics": store.read_json("analysis", j.key, "metrics.json")}
        if arrays:
            with np.load(store.path("analysis", j.key) / "arrays.npz") as f:
                item["arrays"] = {k: f[k] for k in f.files}
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
    from bench import papers

    spec = plan.suite.paper
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
) -> RunSummary:
    """Run (or resume) a suite and write ``<results_dir>/<suite name>/``; returns the counters.

    ``evaluate=False`` (``bench analyze``) trains what is missing and runs only the analyses.
    """
    start = time.perf_counter()
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    store = Store(cache_dir or default_cache_dir())
    plan = expand(suite, limit)
    prog = Progress(progress)
    runner = Runner(plan, store, dev, str(data_dir) if data_dir else None, prog)
    summary = RunSummary(planned=sum(not t.zoo for t in plan.train_jobs) + len(plan.eval_jobs))
    prog.log(f"suite {suite.name}: {len(plan.train_jobs)} train jobs, {len(plan.eval_jobs)} eval jobs on {dev}")
    failed_train: set[str] = set()

    def attempt(label: str, job: Callable[[], None]) -> bool:
        """Run one job; a failure is reported and not cached, and the rest of the grid goes on."""
        try:
            job()
            return True
        except DatasetMissingError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a diverged run or CUDA out of memory in one job
            message = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
            summary.failures.append(f"{label}: {message}")
            prog.log(f"  FAILED (not cached): {message}")
            return False

    for i, tjob in enumerate(plan.train_jobs, 1):
        if tjob.zoo:
            continue  # reference rows are evaluated, never trained
        have_raw, missing_wa = train_status(store, tjob)
        if have_raw and not missing_wa:
            summary.cached_train += 1
            continue
        why = "" if not have_raw else f" (re-run to record {', '.join(w.kind for w in missing_wa)}; raw run cached)"
        prog.log(f"[train {i}/{len(plan.train_jobs)}] {tjob.display} seed={tjob.seed} ({tjob.key[:12]}){why}")
        if attempt(f"train {tjob.display} seed={tjob.seed}", lambda: runner.train(tjob, not have_raw, missing_wa)):
            summary.trained += 1
        else:
            failed_train.add(tjob.key)
    for ajob in plan.analysis_jobs:
        if store.has("analysis", ajob.key):
            summary.cached_analyses += 1
        elif ajob.train.key not in failed_train:
            prog.log(f"[analysis] {ajob.display} seed={ajob.train.seed}")
            summary.analyzed += attempt(f"analysis {ajob.display} seed={ajob.train.seed}", lambda: runner.analyze(ajob))
    for sjob in plan.sanity_jobs if evaluate else []:
        if store.has("sanity", sjob.key):
            summary.cached_checks += 1
        elif sjob.train.key not in failed_train:
            summary.checked += attempt(f"sanity checks {sjob.train.display} seed={sjob.train.seed}", lambda: runner.check(sjob))
    for i, ejob in enumerate(plan.eval_jobs if evaluate else [], 1):
        if store.has("eval", ejob.key):
            summary.cached_eval += 1
            continue
        if ejob.train.key in failed_train:
            continue
        prog.log(f"[eval {i}/{len(plan.eval_jobs)}] {ejob.display} seed={ejob.train.seed} {ejob.column}")
        summary.evaluated += attempt(f"eval {ejob.display} seed={ejob.train.seed} {ejob.column}", lambda: runner.evaluate(ejob))
    out = write_results(plan, collect(plan, store), Path(results_dir))
    render_analyses(plan, store, out)
    write_figures(plan, store, out)
    summary.seconds = time.perf_counter() - start
    summary.results_dir = out
    write_json(out / "run.json", summary.as_json())
    return summary
