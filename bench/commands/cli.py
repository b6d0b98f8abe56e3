"""Command line: ``bench run | validate | ls | report``. Parses, resolves the device once, calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.commands import options
from bench.commands.compare import add_compare_parser, cmd_compare
from bench.commands.eval import add_eval_parser, cmd_eval
from bench.commands.profile import add_profile_parser, cmd_profile
from bench.core.errors import BenchError

EXAMPLES = {
    "run": """examples:
  bench run suites/quickstart.yaml
  bench run suites/smoke.yaml --device cpu --cache-dir /tmp/bench-cache
  bench run suites/fashion-mnist.yaml --limit 500        # fewer test examples (keyed in the cache)
  bench run suites/quickstart.yaml --dry-run             # plan and cache status only
  bench run suites/smoke.yaml --set train.epochs=2 --set 'wa=[none, swa]'   # override suite keys (YAML values)
  bench run suites/smoke.yaml --workers 2                # two worker processes (one per GPU, or CPU threads split)
  bench run suites/smoke.yaml --executor ray             # a local Ray cluster (--ray-address HOST:PORT joins one)
  bench run suites/smoke.yaml --executor ray --ray-address HOST:PORT --ray-transfer   # nodes without a shared file system
  bench run suites/smoke.yaml --executor slurm --slurm-partition gpu --slurm-gpus 1 --slurm-time 240""",
    "status": """examples:
  bench status suites/smoke.yaml                        # done / running (where) / failed / left, from the cache and its claims
  bench status suites/cifar10.yaml --cache-dir /shared/bench-cache""",
    "validate": """examples:
  bench validate suites/quickstart.yaml
  bench validate suites/cifar10.yaml --cache-dir /data/bench-cache
  bench validate suites/smoke.yaml --set eval.n_examples=100 --set threat.eps=4/255
  bench validate suites/cifar10.yaml --device cuda      # the estimated time on a GPU (measured by `bench profile` there)""",
    "ls": """examples:
  bench ls defences
  bench ls attacks
  bench ls corruptions                      # the 15 generated common corruptions""",
    "data": """examples:
  bench data status
  bench data status cifar10                 # one dataset
  bench data fetch cifar10                  # downloads with the `vision` extra, else prints manual steps
  bench data fetch svhn --data-dir /data""",
    "analyze": """examples:
  bench analyze suites/quickstart.yaml      # heat maps, perturbation spectra, filtered accuracy -> results/quickstart/analysis/ (PNG + PDF)""",
    "cache": """examples:
  bench cache ls                  # every entry: kind, key, size, what it is
  bench cache verify              # check every file against its recorded sha256; exit 1 if any is damaged
  bench cache gc                  # remove damaged entries, unfinished writes, abandoned claims and resume state
  bench cache show 3fa9c2         # one entry's files, checksums and manifest""",
    "report": """examples:
  bench report suites/quickstart.yaml                   # re-render results/quickstart/ (and its index.html page) from the cache
  bench report suites/papers/fr-aaai23-table2.yaml      # the paper's table: ours / published (delta) per cell (before any run: ours "—")
  bench report suites/papers/fr-aaai23-table2.yaml --format latex""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Train adversarial-robustness defences and compare them across attacks.",
        epilog="Run `bench COMMAND --help` for each command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("run", help="train and evaluate a suite, then write its leaderboard", epilog=EXAMPLES["run"], formatter_class=fmt)
    options.add_common(p)
    options.add_compute(p, dry_run=True)
    options.add_executor(p)

    p = sub.add_parser("status", help="what is done, running (where), failed and left of a suite, from the cache", epilog=EXAMPLES["status"], formatter_class=fmt)
    options.add_common(p)

    p = sub.add_parser("validate", help="parse a suite, expand its grid, show cache hits/misses (no compute)", epilog=EXAMPLES["validate"], formatter_class=fmt)
    options.add_common(p, results=False)
    p.add_argument("--device", default="auto", help="device the time estimate is for: auto | cpu | cuda | cuda:N (default: auto)")

    p = sub.add_parser("ls", help="list registered plug-ins with versions and parameters", epilog=EXAMPLES["ls"], formatter_class=fmt)
    p.add_argument("kind", choices=["defences", "attacks", "datasets", "models", "corruptions"])
    p.add_argument("--plugins", nargs="*", default=[], metavar="MODULE", help="extra plug-in modules or .py files to load first")

    p = sub.add_parser("analyze", help="spectral analyses of a suite's models (trains what is missing; no attacks)", epilog=EXAMPLES["analyze"], formatter_class=fmt)
    options.add_common(p)
    options.add_compute(p)

    p = sub.add_parser("data", help="dataset status and downloads", epilog=EXAMPLES["data"], formatter_class=fmt)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, summary, name_help in (
        ("status", "where each dataset is found (or what is missing)", "only this dataset (default: all)"),
        ("fetch", "download a dataset (needs the `vision` extra), else print the manual steps", "dataset to fetch"),
    ):
        a = actions.add_parser(action, help=summary, description=summary, epilog=EXAMPLES["data"], formatter_class=fmt)
        a.add_argument("name", nargs="?", help=name_help)
        a.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: $BENCH_DATA, then the user data dir)")

    p = sub.add_parser("report", help="re-render a suite's leaderboard (or its paper table) from the cache only", epilog=EXAMPLES["report"], formatter_class=fmt)
    options.add_common(p)
    p.add_argument("--format", choices=["md", "latex", "csv"], default="md", help="output format (default: md)")
    p.add_argument("--force", action="store_true", help="replace existing results even when the cache holds fewer")

    p = sub.add_parser("cache", help="inspect, verify and clean the artefact cache", epilog=EXAMPLES["cache"], formatter_class=fmt)
    p.add_argument("action", choices=["ls", "verify", "gc", "show"])
    p.add_argument("key", nargs="?", help="show: an entry key or a unique prefix of one")
    p.add_argument("--cache-dir", type=Path, default=None, help="artefact cache (default: $BENCH_CACHE or ~/.cache/bench)")
    add_compare_parser(sub)
    add_eval_parser(sub)
    add_profile_parser(sub)
    return parser


def print_plan(plan, store) -> None:
    suite = plan.suite
    cached = {t.key: t.zoo or store.has(t.kind, t.key) for t in plan.train_jobs}
    print(f"suite {suite.name} ({suite.path})")
    print(f"  dataset {suite.dataset.name}, model {suite.model.name}, threat {suite.threat.norm} eps={suite.threat.eps_text}")
    hits_t = sum(cached.values())
    hits_e = sum(store.has(j.kind, j.key) for j in plan.eval_jobs)
    print(f"  {len(plan.train_jobs)} train jobs ({hits_t} cached), {len(plan.eval_jobs)} eval jobs ({hits_e} cached)")
    for t in plan.train_jobs:
        mark = "hit " if cached[t.key] else "miss"
        print(f"  [{mark}] train {t.display:<24} seed={t.seed:<3} {t.key[:16]}")
        for e in plan.evals_of(t):
            mark = "hit " if store.has(e.kind, e.key) else "miss"
            print(f"  [{mark}]   eval {e.display:<24} {e.column:<14} {e.weights_label:<14} {e.key[:16]}")
    for p in plan.prefix_jobs:
        mark = "hit " if store.has(p.kind, p.key) else "miss"
        print(f"  [{mark}] {p.label} {p.key[:16]}")
    from bench.plan.kinds import EVAL, KINDS, PREFIX, TRAIN

    listed = (PREFIX.name, TRAIN.name, EVAL.name)  # each task listed above; the other kinds counted
    others = [t for t in plan.tasks if t.kind not in listed]
    hits_o = sum(store.has(t.kind, t.key) for t in others)
    names = "/".join(k for k in KINDS if k not in listed)
    print(f"  {len(others)} {names} tasks ({hits_o} cached); {len(plan.tasks)} tasks in all")
    from bench.report.render import waiting_lines

    for line in waiting_lines(plan):
        print(f"  {line[2:]}")


def cmd_run(args: argparse.Namespace) -> int:
    from bench.api.run import run_suite
    from bench.core.files import default_cache_dir
    from bench.device.env import check_device, resolve_device
    from bench.engine.executors import executor_config, flag_values
    from bench.engine.store import Store
    from bench.plan.expand import expand
    from bench.suite.load import load_suite

    check_device(args.device)  # `--device gpu`: one line, before anything else
    suite = load_suite(args.suite, args.set)
    plan = expand(suite, args.limit)  # what needs the plan (rows, paper, --limit) fails here, before any work
    if args.dry_run:
        print_plan(plan, Store(args.cache_dir or default_cache_dir()))
        return 0
    executor = executor_config(args.executor_config, name=args.executor, **flag_values(args))
    device = resolve_device(args.device) if executor.in_process else args.device  # resolved by each worker otherwise
    if executor.on_this_machine:  # the tasks run on this machine
        _warn_precision(suite, resolve_device(args.device), args.cache_dir or default_cache_dir())
    summary = run_suite(
        suite, args.cache_dir, args.results_dir, device, limit=args.limit, data_dir=args.data_dir,
        progress=not args.quiet, debug=args.debug, executor=executor, plan=plan,
    )  # fmt: skip
    out = summary.results_dir
    print((out / "leaderboard.md").read_text())
    s = summary.as_json()
    print(
        f"trained {s['trained']} (cached {s['cached_train']}), evaluated {s['evaluated']} "
        f"(cached {s['cached_eval']}) in {s['seconds']:.1f}s"
    )
    print(f"leaderboard: {out / 'leaderboard.md'}")
    return _report_failures(summary)


def _warn_precision(suite, device, cache_dir) -> None:
    """One line per explicit precision this machine only emulates (``bench/device/native.py``), on stderr."""
    from bench.device.native import precision_warnings

    for line in precision_warnings(suite, device, cache_dir):
        print(f"bench: warning: {line}", file=sys.stderr)


def _report_failures(summary) -> int:
    for f, log in zip(summary.failures, summary.logs):
        print(f"FAILED: {f}\n  traceback: {log}", file=sys.stderr)
    return 1 if summary.failures else 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from bench.api.run import run_suite
    from bench.device.env import resolve_device
    from bench.suite.load import load_suite

    suite = load_suite(args.suite, args.set)
    if suite.analysis is None:
        raise BenchError(f"{args.suite}: analysis: missing (add `analysis: {{rows: [...]}}` or `analysis: true`)")
    summary = run_suite(
        suite, args.cache_dir, args.results_dir, resolve_device(args.device), limit=args.limit,
        data_dir=args.data_dir, progress=not args.quiet, evaluate=False, debug=args.debug,
    )  # fmt: skip
    out = summary.results_dir / "analysis"
    print((out / "README.md").read_text() if (out / "README.md").exists() else "no analysis results")
    print(f"analysis: {out}")
    return _report_failures(summary)


def cmd_status(args: argparse.Namespace) -> int:
    from bench.core.files import default_cache_dir
    from bench.engine.status import suite_status
    from bench.engine.store import Store
    from bench.plan.expand import expand
    from bench.report.folder import results_folder
    from bench.suite.load import load_suite

    plan = expand(load_suite(args.suite, args.set), args.limit)
    text = suite_status(plan, Store(args.cache_dir or default_cache_dir()), results_folder(args.results_dir, plan.suite) / "logs")
    print(text)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.core.files import default_cache_dir
    from bench.device.env import check_device, resolve_device
    from bench.engine.store import Store
    from bench.plan.cost import summary
    from bench.plan.expand import expand
    from bench.suite.load import load_suite

    device = check_device(args.device) or resolve_device()  # an estimate for a device this machine lacks is fine
    suite = load_suite(args.suite, args.set)
    plan, store = expand(suite, args.limit), Store(args.cache_dir or default_cache_dir())
    _warn_precision(suite, device, store.root)
    print_plan(plan, store)
    if "auto" in (suite.train.precision, suite.eval.precision):
        from bench.device.native import explain

        print(f"  precision auto on {device.type} here: {explain('auto', device, store.root)} (each worker decides for its own device)")
    print(summary(plan, device, store))
    print("ok")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from bench.registry import REGISTRIES
    from bench.suite.refs import load_plugins

    load_plugins(list(args.plugins), Path.cwd(), "--plugins")
    for entry in REGISTRIES[args.kind].entries():
        print(f"{entry.name} (v{entry.version}): {entry.summary}")
        facts = entry.facts()
        if facts:
            print(f"    [{'; '.join(facts)}]")
        for name, typ, default in entry.param_fields():
            print(f"    {name}: {typ} = {default!r}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.core.files import atomic_write_text, default_cache_dir
    from bench.engine.store import Store
    from bench.plan.expand import expand
    from bench.report.aggregate import collect
    from bench.report.folder import paper_report, results_folder, write_folder
    from bench.report.render import leaderboard_latex
    from bench.suite.load import load_suite

    plan = expand(load_suite(args.suite, args.set), args.limit)
    store = Store(args.cache_dir or default_cache_dir())
    out = results_folder(args.results_dir, plan.suite)
    rows = collect(plan, store)
    ext = {"md": "md", "latex": "tex", "csv": "csv"}[args.format]
    if not rows and plan.paper is not None:  # the published table, ours "—": what a researcher wants to see first
        text, path = paper_report(plan, store, args.format), out / f"paper.{ext}"
        print(text)
        if _evaluated_cells(out / "results.json"):
            print(f"not written: {out} holds results this cache does not have (nothing cached for suite {plan.suite.name} "
                  f"in {store.root})", file=sys.stderr)  # fmt: skip
        else:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
            print(f"written: {path}")
        return 0
    if not rows:
        raise NothingCachedError(
            f"nothing cached for suite {plan.suite.name} in {store.root} (run `bench run {args.suite}` first); {out} left as it was"
        )
    old = _evaluated_cells(out / "results.json")
    if len(rows) < old and not args.force:
        raise NothingCachedError(
            f"the cache holds {len(rows)} of the {old} results in {out / 'results.json'}; not overwriting them "
            "(another cache? use --cache-dir, or --force to replace them)"
        )
    shown: dict[str, str] = {}  # the file --format asks for: printed, and (re)written before the page

    def extra() -> dict[str, str]:
        if plan.paper is not None:
            shown[f"paper.{ext}"] = paper_report(plan, store, args.format)
        elif args.format == "latex":
            shown["leaderboard.tex"] = leaderboard_latex(plan, rows)
        else:  # leaderboard.md or results.csv, just written
            name = "leaderboard.md" if args.format == "md" else "results.csv"
            shown[name] = (out / name).read_text()
        return shown

    page = write_folder(plan, store, out, rows, extra=extra)
    (name, text), = shown.items()
    print(text)
    print(f"written: {out / name}")
    print(f"page: {page}")
    return 0


class NothingCachedError(BenchError):
    exit_code = 1


def _evaluated_cells(path: Path) -> int:
    """How many result rows an existing results.json holds (0 if absent or unreadable)."""
    try:
        return len(json.loads(path.read_text()))
    except (OSError, ValueError):
        return 0


def cmd_data(args: argparse.Namespace) -> int:
    from bench.data.fetch import fetch, status

    data_dir = str(args.data_dir) if args.data_dir else None
    if args.action == "status":
        for name, line in status(data_dir, args.name):
            print(f"{name:<14} {line}")
        return 0
    if not args.name:
        raise BenchError("bench data fetch: name a dataset (see `bench data status`)")
    print(fetch(args.name, data_dir))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from bench.commands.cache import gc, ls, show, verify
    from bench.core.files import default_cache_dir
    from bench.engine.store import Store

    store = Store(args.cache_dir or default_cache_dir())
    if args.action != "show" and args.key:
        raise BenchError(f"bench cache {args.action}: takes no key")
    if args.action == "show":
        if not args.key:
            raise BenchError("bench cache show: name an entry key (see `bench cache ls`)")
        print(show(store, args.key))
        return 0
    if args.action == "ls":
        print(ls(store))
        return 0
    if args.action == "verify":
        damaged = verify(store, print)
        return 1 if damaged else 0
    print(gc(store))
    return 0


COMMANDS = {
    "analyze": cmd_analyze, "cache": cmd_cache, "compare": cmd_compare, "data": cmd_data, "eval": cmd_eval, "ls": cmd_ls,
    "report": cmd_report, "run": cmd_run, "status": cmd_status, "validate": cmd_validate, "profile": cmd_profile,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value in vars(args).items():  # `--cache-dir=~/x` reaches us unexpanded
        if isinstance(value, Path):
            setattr(args, name, value.expanduser())
    try:
        import bench  # noqa: F401  (registers the built-in plug-ins)

        return COMMANDS[args.command](args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # e.g. `bench validate ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("bench: interrupted (completed jobs are cached; re-run to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
