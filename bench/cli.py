"""Command line: ``bench run | validate | ls | report``. Parses, resolves the device once, calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.compare import add_compare_parser, cmd_compare
from bench.errors import BenchError

EXAMPLES = {
    "run": """examples:
  bench run suites/quickstart.yaml
  bench run suites/smoke.yaml --device cpu --cache-dir /tmp/bench-cache
  bench run suites/fashion-mnist.yaml --limit 500        # fewer test examples (keyed in the cache)
  bench run suites/quickstart.yaml --dry-run             # plan and cache status only""",
    "validate": """examples:
  bench validate suites/quickstart.yaml
  bench validate suites/cifar10.yaml --cache-dir /data/bench-cache""",
    "ls": """examples:
  bench ls defences
  bench ls attacks""",
    "data": """examples:
  bench data status
  bench data fetch cifar10                  # downloads with the `vision` extra, else prints manual steps
  bench data fetch svhn --data-dir /data""",
    "analyze": """examples:
  bench analyze suites/quickstart.yaml      # heat maps, perturbation spectra, filtered accuracy -> results/quickstart/analysis/""",
    "report": """examples:
  bench report suites/quickstart.yaml                   # re-render results/quickstart/ from the cache
  bench report suites/papers/fr-aaai23-table2.yaml      # the paper's table: ours / published (delta) per cell
  bench report suites/papers/fr-aaai23-table2.yaml --format latex""",
}


def _add_common(p: argparse.ArgumentParser, results: bool = True) -> None:
    p.add_argument("suite", type=Path, help="suite YAML file")
    p.add_argument("--cache-dir", type=Path, default=None, help="artefact cache (default: $BENCH_CACHE or ~/.cache/bench)")
    if results:
        p.add_argument("--results-dir", type=Path, default=Path("results"), help="where <suite>/leaderboard.md goes (default: ./results)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate at most N test examples (part of the eval key)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Train adversarial-robustness defences and compare them across attacks.",
        epilog="Run `bench COMMAND --help` for each command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("run", help="train and evaluate a suite, then write its leaderboard", epilog=EXAMPLES["run"], formatter_class=fmt)
    _add_common(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: $BENCH_DATA, then the user data dir)")
    p.add_argument("--dry-run", action="store_true", help="print the plan with cache hits and misses; compute nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("validate", help="parse a suite, expand its grid, show cache hits/misses (no compute)", epilog=EXAMPLES["validate"], formatter_class=fmt)
    _add_common(p, results=False)

    p = sub.add_parser("ls", help="list registered plug-ins with versions and parameters", epilog=EXAMPLES["ls"], formatter_class=fmt)
    p.add_argument("kind", choices=["defences", "attacks", "datasets", "models"])
    p.add_argument("--plugins", nargs="*", default=[], help="extra plug-in modules or .py files to load first")

    p = sub.add_parser("analyze", help="spectral analyses of a suite's models (trains what is missing; no attacks)", epilog=EXAMPLES["analyze"], formatter_class=fmt)
    _add_common(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: $BENCH_DATA, then the user data dir)")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("data", help="dataset status and downloads", epilog=EXAMPLES["data"], formatter_class=fmt)
    p.add_argument("action", choices=["status", "fetch"])
    p.add_argument("name", nargs="?", help="dataset to fetch")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: $BENCH_DATA, then the user data dir)")

    p = sub.add_parser("report", help="re-render a suite's leaderboard (or its paper table) from the cache only", epilog=EXAMPLES["report"], formatter_class=fmt)
    _add_common(p)
    p.add_argument("--format", choices=["md", "latex", "csv"], default="md", help="output format (default: md)")
    add_compare_parser(sub)
    return parser


def print_plan(plan, store) -> None:
    from bench.runner import train_status

    suite = plan.suite
    cached = {t.key: train_status(store, t) == (True, ()) for t in plan.train_jobs}
    print(f"suite {suite.name} ({suite.path})")
    print(f"  dataset {suite.dataset.name}, model {suite.model.name}, threat {suite.threat.norm} eps={suite.threat.eps_text}")
    hits_t = sum(cached.values())
    hits_e = sum(store.has("eval", j.key) for j in plan.eval_jobs)
    print(f"  {len(plan.train_jobs)} train jobs ({hits_t} cached), {len(plan.eval_jobs)} eval jobs ({hits_e} cached)")
    for t in plan.train_jobs:
        mark = "hit " if cached[t.key] else "miss"
        print(f"  [{mark}] train {t.display:<24} seed={t.seed:<3} {t.key[:16]}")
        for e in (e for e in plan.eval_jobs if e.train is t):
            mark = "hit " if store.has("eval", e.key) else "miss"
            print(f"  [{mark}]   eval {e.display:<24} {e.column:<14} {e.weights:<14} {e.key[:16]}")


def cmd_run(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.env import resolve_device
    from bench.plan import expand
    from bench.runner import run_suite
    from bench.store import Store, default_cache_dir

    suite = load_suite(args.suite)
    if args.dry_run:
        print_plan(expand(suite, args.limit), Store(args.cache_dir or default_cache_dir()))
        return 0
    device = resolve_device(args.device)
    summary = run_suite(
        suite, args.cache_dir, args.results_dir, device, limit=args.limit, data_dir=args.data_dir, progress=not args.quiet
    )
    out = summary.results_dir
    print((out / "leaderboard.md").read_text())
    s = summary.as_json()
    print(
        f"trained {s['trained']} (cached {s['cached_train']}), evaluated {s['evaluated']} "
        f"(cached {s['cached_eval']}) in {s['seconds']:.1f}s"
    )
    print(f"leaderboard: {out / 'leaderboard.md'}")
    if summary.failures:
        for f in summary.failures:
            print(f"FAILED: {f}", file=sys.stderr)
        return 1
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.env import resolve_device
    from bench.runner import run_suite

    suite = load_suite(args.suite)
    if suite.analysis is None:
        raise BenchError(f"{args.suite}: analysis: missing (add `analysis: {{rows: [...]}}` or `analysis: true`)")
    summary = run_suite(
        suite, args.cache_dir, args.results_dir, resolve_device(args.device), limit=args.limit,
        data_dir=args.data_dir, progress=not args.quiet, evaluate=False,
    )  # fmt: skip
    out = summary.results_dir / "analysis"
    print((out / "README.md").read_text() if (out / "README.md").exists() else "no analysis results")
    print(f"analysis: {out}")
    return 1 if summary.failures else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.plan import expand
    from bench.store import Store, default_cache_dir

    suite = load_suite(args.suite)
    print_plan(expand(suite, args.limit), Store(args.cache_dir or default_cache_dir()))
    print("ok")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from bench.config import load_plugins
    from bench.registry import REGISTRIES

    load_plugins(list(args.plugins), Path.cwd(), "--plugins")
    for entry in REGISTRIES[args.kind].entries():
        print(f"{entry.name} (v{entry.version}): {entry.summary}")
        for name, typ, default in entry.param_fields():
            print(f"    {name}: {typ} = {default!r}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.aggregate import collect
    from bench.config import load_suite
    from bench.plan import expand
    from bench.render import leaderboard_latex, write_results
    from bench.report_figures import write_figures
    from bench.runner import paper_report, render_analyses
    from bench.store import Store, atomic_write_text, default_cache_dir

    plan = expand(load_suite(args.suite), args.limit)
    store = Store(args.cache_dir or default_cache_dir())
    rows = collect(plan, store)
    out = write_results(plan, rows, args.results_dir)
    render_analyses(plan, store, out)
    write_figures(plan, store, out)
    ext = {"md": "md", "latex": "tex", "csv": "csv"}[args.format]
    if plan.suite.paper is not None:
        text, path = paper_report(plan, store, args.format), out / f"paper.{ext}"
    elif args.format == "md":
        text, path = (out / "leaderboard.md").read_text(), out / "leaderboard.md"
    elif args.format == "csv":
        text, path = (out / "results.csv").read_text(), out / "results.csv"
    else:
        text, path = leaderboard_latex(plan, rows), out / "leaderboard.tex"
    atomic_write_text(path, text)
    print(text)
    print(f"written: {path}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from bench.data.fetch import fetch, status

    data_dir = str(args.data_dir) if args.data_dir else None
    if args.action == "status":
        for name, line in status(data_dir):
            print(f"{name:<14} {line}")
        return 0
    if not args.name:
        raise BenchError("bench data fetch: name a dataset (see `bench data status`)")
    print(fetch(args.name, data_dir))
    return 0


COMMANDS = {"analyze": cmd_analyze, "run": cmd_run, "validate": cmd_validate, "ls": cmd_ls, "report": cmd_report, "data": cmd_data, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
