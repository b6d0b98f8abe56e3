"""Scale benchmark: a finished paper-scale cache (>= 2 GB of real weight files) and plans of 1,000 /
14,000 / 50,000 tasks; times the commands a user runs on it. Writes ``results/perf/scale.md``.

    .venv/bin/python results/perf/scale.py [--work /tmp/bench-scale] [--sizes 1000,14000,50000] [--gb 2.2]

What it builds, under ``--work`` (deleted at the end unless ``--keep``):

* one synthetic suite per size: WRN-34-10 on the ``synthetic`` dataset (3x32x32, 10 classes), five
  defences x 2 weight averagings x five attacks, the seeds scaled to reach the task count (65 tasks a
  seed). The plans are nested: the first seeds' tasks are the same keys in every plan.
* template entries: the same grid with ``tiny_cnn`` and one seed run for real by the engine (one
  epoch), so every file a report reads is a real one.
* the cache of the largest plan: every task's entry cloned from the template entry of its (kind,
  defence, averaging, attack), committed like the store commits (a folder under ``tmp/`` with its
  files and an ``ENTRY`` of their sha256, renamed into place); twelve trainings of the first seeds
  get a real WRN-34-10 state dict of random weights (184 MB each, distinct bytes) as their
  ``weights/raw/best_val.pt``: the cache holds >= ``--gb`` GB. ``bench cache verify`` then checks
  every entry fully (and stamps it), as a finished run would have.

Then each command runs as a fresh process (``python -m bench ...``), timed by wall clock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFENCES = "[standard, pgd_at, trades, mart, awp]"
ATTACKS = "[fgsm, {pgd: {steps: 10}}, {pgd: {steps: 20}}, {pgd: {steps: 50}}, {cw: {steps: 30}}]"
PER_SEED = 65
TIMEOUT_S = 480.0
TEMPLATE = Path("/tmp/bench-scale-template")  # the template run's cache (kept between runs of this script)


def suite_text(seeds: int, model: str = "wrn_34_10", epochs: int = 2, n: int = 256) -> str:
    return f"""name: scale
dataset: {{synthetic: {{num_classes: 10, size: 32, channels: 3, n_train: 512, n_test: 256}}}}
model: {model}
threat: {{norm: Linf, eps: 8/255}}
train: {{epochs: {epochs}, batch_size: 64, schedule: {{milestones: [1]}}, val_fraction: 0.125, selection: best_val, val_attack: {{steps: 2}}}}
defences: {DEFENCES}
attacks: {ATTACKS}
wa: [none, swa]
eval: {{n_examples: {n}, batch_size: 256}}
seeds: [{", ".join(map(str, range(seeds)))}]
"""


def bench(*args: str, env: dict | None = None, check: bool = True, timeout: float = 3600) -> float:
    """Wall seconds of ``python -m bench ARGS`` in a fresh process (its output discarded); inf past ``timeout``."""
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                             check=False, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return float("inf")
    seconds = time.perf_counter() - t0
    if check and out.returncode != 0:
        raise SystemExit(f"bench {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return seconds


def pattern(task) -> tuple:
    """What a task's entry looks like: its kind and label without the seed (defence, averaging, attack)."""
    return task.kind, re.sub(r" seed=\d+", "", task.label)


def commit(cache: Path, kind: str, key: str, source: Path) -> None:
    """An entry of ``kind/key`` with ``source``'s files, committed as ``Store.writer`` does (the files'
    sha256 are the source's, as its ``ENTRY`` records them: the bytes are the same)."""
    tmp = cache / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}-{kind}-{key}"
    files = json.loads((source / "ENTRY").read_text())["files"]
    for name in files:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, tmp / name)
    entry = {"kind": kind, "key": key, "files": files, "created": time.time(), "host": platform.node(), "pid": os.getpid()}
    (tmp / "ENTRY").write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
    (cache / kind).mkdir(parents=True, exist_ok=True)
    os.replace(tmp, cache / kind / key)


def build(work: Path, sizes: list[int], gb: float) -> dict:
    import torch

    from bench.models import build_model
    from bench.plan.expand import expand
    from bench.suite.load import load_suite

    seeds = {n: -(-n // PER_SEED) for n in sizes}
    suites = {}
    for n in sizes:
        suites[n] = work / f"scale-{n}.yaml"
        suites[n].write_text(suite_text(seeds[n]))
    TEMPLATE.mkdir(parents=True, exist_ok=True)
    template = TEMPLATE / "template.yaml"
    template.write_text(suite_text(1, model="{tiny_cnn: {width: 8}}", epochs=2, n=64))
    t0 = time.perf_counter()
    bench("run", str(template), "--cache-dir", str(TEMPLATE / "cache"), "--results-dir", str(TEMPLATE / "results"), "--device", "cpu", "--quiet")
    print(f"template suite run (or found) in {time.perf_counter() - t0:.0f}s", flush=True)
    tplan = expand(load_suite(template))
    sources = {pattern(t): TEMPLATE / "cache" / t.kind / t.key for t in tplan.tasks}

    biggest = max(sizes)
    plan = expand(load_suite(suites[biggest]))
    cache = work / "cache"
    t0 = time.perf_counter()
    for i, task in enumerate(plan.tasks):
        commit(cache, task.kind, task.key, sources[pattern(task)])
        if i % 5000 == 0:
            print(f"  {i}/{len(plan.tasks)} entries ({time.perf_counter() - t0:.0f}s)", flush=True)
    model = build_model("wrn_34_10", num_classes=10, shape=(3, 32, 32))
    big = [t for t in plan.tasks if t.kind == "train"]
    per_file = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    count = int(-(-gb * 1e9 // per_file))
    for j, task in enumerate(big[:count]):  # the first seeds' trainings: in every plan
        torch.manual_seed(j)
        state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
        src = work / "wrn"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(cache / "train" / task.key, src, ignore=shutil.ignore_patterns("ENTRY"))
        torch.save(state, src / "weights" / "raw" / "best_val.pt")
        recorded = json.loads((cache / "train" / task.key / "ENTRY").read_text())
        recorded["files"]["weights/raw/best_val.pt"] = hashlib.sha256((src / "weights" / "raw" / "best_val.pt").read_bytes()).hexdigest()
        (src / "ENTRY").write_text(json.dumps(recorded))
        shutil.rmtree(cache / "train" / task.key)
        commit(cache, "train", task.key, src)
    shutil.rmtree(work / "wrn", ignore_errors=True)
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    print(f"cache: {len(plan.tasks)} entries, {size / 1e9:.2f} GB ({count} WRN-34-10 state dicts) in {time.perf_counter() - t0:.0f}s", flush=True)
    return {"suites": suites, "cache": cache, "bytes": size, "wrn": count, "per_file": per_file, "seeds": seeds,
            "tasks": {n: len(expand(load_suite(suites[n])).tasks) for n in sizes},
            "kinds": dict(Counter(t.kind for t in plan.tasks)), "trainings": {n: 5 * seeds[n] for n in sizes}}


def scheduler_overhead(work: Path, n_tasks: int) -> float:
    """Seconds per task the scheduler and store spend around tasks that do nothing: a stub executor
    whose tasks write one small entry, on the ``n_tasks`` plan with an empty cache."""
    from concurrent.futures import Future

    from bench.core.progress import Progress
    from bench.engine.executors.base import Executor
    from bench.engine.scheduler import run_tasks
    from bench.engine.store import Store
    from bench.plan.expand import expand
    from bench.suite.load import load_suite

    class Stub(Executor):
        remote = False
        slots = 1

        def __init__(self, store: Store) -> None:
            self.store = store

        def submit(self, task) -> Future:
            with self.store.writer(task.kind, task.key) as tmp:
                (tmp / "metrics.json").write_text("{}")
            f: Future = Future()
            f.set_result(None)
            return f

    plan = expand(load_suite(work / f"scale-{n_tasks}.yaml"))
    store = Store(work / "stub-cache")
    t0 = time.perf_counter()
    result = run_tasks(plan, store, Stub(store), Progress(False), work / "logs")
    seconds = time.perf_counter() - t0
    assert len(result.outcomes) == len(plan.tasks) and not result.failures
    shutil.rmtree(work / "stub-cache")
    return seconds / len(plan.tasks)


def measure(info: dict, work: Path, sizes: list[int]) -> dict:
    cache = str(info["cache"])
    out: dict = {}
    out["verify"] = bench("cache", "verify", "--cache-dir", cache, env={"BENCH_STAMP_RACY_S": "0"})
    print(f"bench cache verify (full read, stamps every entry): {out['verify']:.1f}s", flush=True)
    for n in sizes:
        suite, res = str(info["suites"][n]), str(work / "results")
        row = out[n] = {}
        common = ["--cache-dir", cache]
        limit = TIMEOUT_S if n > 14000 else 3600  # the largest plan: rendering thousands of rows is given a bound
        row["validate"] = bench("validate", suite, *common, "--device", "cpu")
        row["status"] = min(bench("status", suite, *common, "--results-dir", res) for _ in range(2))
        row["run"] = bench("run", suite, *common, "--results-dir", res, "--device", "cpu", "--quiet", timeout=limit)
        again = [bench("run", suite, *common, "--results-dir", res, "--device", "cpu", "--quiet", timeout=limit) for _ in range(2 if row["run"] < limit else 0)]
        row["run_again"] = min(again, default=float("inf"))
        row["report"] = bench("report", suite, *common, "--results-dir", res, timeout=limit) if row["run"] < limit else float("inf")
        print(f"{n} tasks: {row}", flush=True)
    small = min(sizes)
    stamps = info["cache"] / "stamps"
    shutil.move(stamps, work / "stamps-aside")  # as before stamps: every entry hashed and parsed in each process
    out["run_unstamped"] = bench("run", str(info["suites"][small]), "--cache-dir", cache, "--results-dir", str(work / "results"), "--device", "cpu", "--quiet",
                                 env={"BENCH_STAMP_RACY_S": "1e9"})
    shutil.rmtree(stamps, ignore_errors=True)
    shutil.move(work / "stamps-aside", stamps)
    print(f"re-run of {small} tasks without stamps (full read, as before): {out['run_unstamped']:.1f}s", flush=True)
    out["overhead"] = {small: scheduler_overhead(work, small)}  # (one small entry per task: ~40 ms a task)
    print(f"scheduler overhead per task: {out['overhead']}", flush=True)
    out["run_final"] = bench("run", str(info["suites"][small]), "--cache-dir", cache, "--results-dir", str(work / "results"), "--device", "cpu", "--quiet")
    print(f"re-run of {small} tasks, again at the end: {out['run_final']:.1f}s", flush=True)
    return out


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), platform.processor())


def write_md(info: dict, m: dict, sizes: list[int], path: Path) -> None:
    small = min(sizes)
    load = os.getloadavg()
    def f(x: float) -> str:
        return f"> {TIMEOUT_S:.0f}" if x == float("inf") else f"{x:.1f}"

    rows = "\n".join(
        f"| {info['tasks'][n]:,} | {info['trainings'][n]:,} | {f(m[n]['run'])} | {f(m[n]['run_again'])} | {f(m[n]['status'])} | {f(m[n]['report'])} | {f(m[n]['validate'])} |"
        for n in sizes
    )
    overhead = ", ".join(f"{info['tasks'][n]:,} tasks: {1000 * s:.1f} ms" for n, s in m["overhead"].items())
    text = f"""# Scale: a finished paper-scale cache

Measured by `results/perf/scale.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}) on {cpu_model()},
{os.cpu_count()} cores **shared with other jobs** (load average at the end: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}),
Python {platform.python_version()}; each figure is one fresh `python -m bench ...` process, wall clock
(about 2-4 s of each is Python, torch and bench imports on this loaded machine).

The cache: {info['kinds'].get('train', 0) + info['kinds'].get('eval', 0) + info['kinds'].get('sanity', 0):,} entries of the
{max(sizes):,}-task plan (the smaller plans are its first seeds), **{info['bytes'] / 1e9:.2f} GB** on disk, of which
{info['wrn']} WRN-34-10 state dicts of random weights ({info['per_file'] / 1e6:.0f} MB each, distinct bytes) in the
first seeds' trainings (so in every plan). Suite: WRN-34-10 on `synthetic` 3x32x32, five defences x
{{none, swa}} x five attacks, 65 tasks a seed. Entries were committed as the store commits them and
checked once by `bench cache verify` ({m['verify']:.0f} s: every byte hashed, every `.pt` loaded).

| tasks | trainings | first run, all cached, renders (s) | re-run, all cached (s) | `bench status` (s) | `bench report` (s) | `bench validate` (s) |
|---:|---:|---:|---:|---:|---:|---:|
{rows}

* **Re-run of a finished suite whose cache holds {info['bytes'] / 1e9:.1f} GB: {m[small]['run_again']:.1f} s** for {info['tasks'][small]:,}
  tasks (target <= 5 s on 2 cores); measured again at the end of the benchmark: {m['run_final']:.1f} s. The same re-run without
  stamps (as before: every entry hashed and every `.pt` parsed in each process): **{m['run_unstamped']:.1f} s**, which
  grows with the bytes; with stamps it grows with the number of entries only (a `stat` of each file and
  a read of each `ENTRY`).
* The first run on the finished cache renders the results (leaderboard, figures, page) from every evaluation:
  {m[small]['run']:.1f} s for {info['tasks'][small]:,} tasks; later re-runs find them current (`bench/api/rendered.py`).
* `bench status`, `report` and `validate` grow linearly with the tasks (plan expansion and one stamp check per
  entry); the ratios between the rows follow the ratios of the task counts.
* Scheduler and store overhead per task (a stub executor whose tasks write one small entry, empty cache): {overhead}.
  It includes the {20} ms the store waits before stamping a new entry (so that a later edit cannot share its timestamp).
"""
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-scale"))
    ap.add_argument("--sizes", default="1000,14000,50000")
    ap.add_argument("--gb", type=float, default=2.2)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (the cache)")
    ap.add_argument("--build-only", action="store_true", help="build the cache (and verify it), measure nothing (with --keep)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "perf" / "scale.md")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    free = shutil.disk_usage(args.work.parent).free
    if free < (args.gb + 4) * 1e9:
        raise SystemExit(f"{args.work.parent}: {free / 1e9:.1f} GB free, need about {args.gb + 4:.0f} GB")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    try:
        info = build(args.work, sizes, args.gb)
        if args.build_only:
            bench("cache", "verify", "--cache-dir", str(info["cache"]), env={"BENCH_STAMP_RACY_S": "0"})
            return
        m = measure(info, args.work, sizes)
        raw = {"info": {k: v for k, v in info.items() if k not in ("suites", "cache")}, "measured": m, "load": os.getloadavg(), "cpu": cpu_model()}
        args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
        write_md(info, m, sizes, args.out)
        print(f"wrote {args.out}")
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
