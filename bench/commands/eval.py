"""``bench eval CHECKPOINT --model M --dataset D``: your own ``.pt`` under attacks, from the shell.

The checkpoint is loaded as a ``checkpoints:`` row of a suite would be (weights only, shapes and
class count checked) and evaluated by ``bench.evaluate``: the same rows, the same cache entries.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from bench.commands.options import command_parser
from bench.core.errors import ConfigError, show

EXAMPLES = """examples:
  bench eval ckpt/mine.pt --model small_cnn --dataset fashion-mnist --eps 0.1
  bench eval ckpt/mine.pt --model small_cnn --dataset fashion-mnist --attack fgsm --attack "{pgd: {steps: 50}}" --n-examples 1000
  bench eval ckpt/wrn.pt --model "{wrn_28_10: {normalize: true}}" --dataset cifar10 --attack "{autoattack: {n_examples: 500}}"
  bench eval ckpt/mine.pt --model small_cnn --dataset mnist --norm L2 --eps 1.5 --json > mine.json
  bench eval ckpt/mine.pt --model small_cnn --dataset fashion-mnist --flags mine-flags.csv   # per-sample flags

The checkpoint: a state_dict saved with torch.save(model.state_dict(), path), of the whole bench
model or of its network alone, or one under "state_dict" / "model" (loaded with weights_only=True).
A second run with the same weights and settings is read from the cache."""


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "eval", "evaluate your own checkpoint (.pt) under attacks; cached by its weights", EXAMPLES)
    p.add_argument("checkpoint", type=Path, help="a .pt file holding a state_dict")
    p.add_argument("--model", required=True, help="registered model, as in a suite: small_cnn or '{small_cnn: {width: 32}}'")
    p.add_argument("--dataset", required=True, help="dataset, as in a suite: fashion-mnist or '{synthetic: {num_classes: 4}}'")
    p.add_argument("--attack", dest="attacks", action="append", default=None, metavar="ATTACK", help="repeat for each attack, as in a suite's attacks: (default: fgsm and pgd)")
    p.add_argument("--eps", default="8/255", help="radius in pixel space, 8/255 or 0.1 (default: 8/255)")
    p.add_argument("--norm", default="Linf", help="Linf, L2 or L1 (default: Linf)")
    p.add_argument("--n-examples", type=int, default=None, metavar="N", help="test examples (default: the whole test set)")
    p.add_argument("--batch-size", type=int, default=500, metavar="N", help="evaluation batch size (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="which test examples when N is smaller than the test set (default: 0)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "tf32", "auto"),
                   help="attack precision, as eval.precision: auto = the fastest path this device runs natively (default: fp32)")
    p.add_argument("--name", default=None, help="row label (default: the file name without .pt)")
    p.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking sanity checks")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--cache-dir", type=Path, default=None, help="artefact cache (default: $BENCH_CACHE or ~/.cache/bench)")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: $BENCH_DATA, then the user data dir)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--flags", type=Path, default=None, metavar="CSV", help="also write the per-sample flags (sample_id, Clean, each attack, Worst case) to CSV")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _yaml_arg(text: str, where: str) -> Any:
    """A plug-in written as in a suite: a name, or YAML such as ``{pgd: {steps: 50}}``."""
    from bench.suite.read import StrictLoader

    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(where, f"invalid YAML {show(text)}: {getattr(e, 'problem', None) or e}") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from bench.api.evaluate import DEFAULT_ATTACKS, parse_request, run_evaluation
    from bench.evaluation.checkpoints import dataset_info, load_checkpoint
    from bench.registry import MODELS
    from bench.suite.read import file_problem
    from bench.suite.refs import parse_ref

    attacks = [_yaml_arg(a, f"--attack[{i}]") for i, a in enumerate(args.attacks)] if args.attacks else list(DEFAULT_ATTACKS)
    labels = {"dataset": "--dataset", "attacks": "--attack", "eps": "--eps", "norm": "--norm", "eval": "--n-examples/--batch-size/--seed/--precision"}
    request = parse_request(
        _yaml_arg(args.dataset, "--dataset"), attacks, args.eps, args.norm, args.n_examples, args.batch_size, args.seed, labels, args.precision
    )  # fmt: skip
    model_ref = parse_ref(MODELS, _yaml_arg(args.model, "--model"), "--model")
    path = args.checkpoint  # every Path argument arrives with ~ expanded (cli.main)
    problem = file_problem(path)
    if problem:
        raise ConfigError("CHECKPOINT", f"{problem}: {path}")
    data_dir = str(args.data_dir) if args.data_dir else None
    model = load_checkpoint(path, model_ref, dataset_info(request.dataset, data_dir), "CHECKPOINT")
    result = run_evaluation(
        model, request, args.device, args.cache_dir, data_dir, name=args.name or path.stem, model_name=model_ref.name,
        sanity=not args.no_sanity, progress=not args.quiet,
    )  # fmt: skip
    if args.flags:
        from bench.core.files import atomic_write_text

        atomic_write_text(args.flags, result.flags.to_csv())
    if args.json:
        table = result.rows.reset_index()
        rows = table.astype(object).where(table.notna(), None)
        out = {"title": result.title, "rows": rows.to_dict("records"), "sanity": result.warnings, "computed": result.computed}
        print(json.dumps(out, indent=1, default=str))
    else:
        print(result.table())
        print("(from the cache)" if result.computed == 0 else f"computed {result.computed} task(s); cached in {args.cache_dir or 'the default cache'}")
    return 0
