"""Options shared by the commands: a subcommand with its examples, the suite options, compute and executor options."""

from __future__ import annotations

import argparse
from pathlib import Path


def command_parser(sub: argparse._SubParsersAction, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """``bench NAME``: its one-line help and its examples (printed verbatim under ``--help``)."""
    return sub.add_parser(name, help=help, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common(p: argparse.ArgumentParser, results: bool = True) -> None:
    p.add_argument("suite", type=Path, help="suite YAML file")
    p.add_argument("--cache-dir", type=Path, default=None, help="artefact cache (default: $BENCH_CACHE or ~/.cache/bench)")
    if results:
        p.add_argument("--results-dir", type=Path, default=Path("results"), help="where <suite>/leaderboard.md goes (default: ./results)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate at most N test examples (part of the eval key)")
    p.add_argument(
        "--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
        help="override a suite key (YAML value; repeatable): train.epochs=2, 'wa=[none, swa]', defences.1.pgd_at.steps=3",
    )  # fmt: skip


def add_compute(p: argparse.ArgumentParser, dry_run: bool = False) -> None:
    """The options of a command that computes (``run``, ``analyze``): device, data, output, debugging."""
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: $BENCH_DATA, then the user data dir)")
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="print the plan with cache hits and misses; compute nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--debug", action="store_true", help="re-raise a failing task's exception (full traceback) instead of going on")


def add_executor(p: argparse.ArgumentParser) -> None:
    from bench.engine.executors import add_flags  # every registered executor's flags

    g = p.add_argument_group("where tasks run (see README: Running on many GPUs or a cluster)")
    add_flags(g, lambda g: g.add_argument("--executor-config", type=Path, default=None, metavar="FILE", help="YAML with executor: and its options (the flags below win)"))
