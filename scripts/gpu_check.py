"""The GPU check (``scripts/gpu-check``): bench's speed on one CUDA device, written as ``results/perf/gpu-<device>.md``.

One command for the first GPU a session is lent (under 10 minutes on one modern GPU):

1. ``bench profile`` for small_cnn on Fashion-MNIST (batch 128), ResNet-18 on CIFAR-shaped data
   (batch 512, with AutoAttack-standard images/s) and WRN-34-10 (batch 128), each in every precision
   the device runs (fp32, tf32, bf16 from compute capability 8.0, fp16);
2. the quickstart end to end (``precision: auto``) from an empty cache, timed;
3. the targets of issue #22 checked: ResNet-18 PGD-10 AT at >= 20 % of the bf16 peak (MFU), and
   AutoAttack-standard on ResNet-18 at >= 30 images/s.

``--dry-run`` runs the same steps on the CPU at toy sizes (tiny models, one step, the smoke suite
instead of the quickstart) and writes the same report to ``--out``: CI runs it so the check cannot rot.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MFU_TARGET, AA_TARGET = 0.20, 30.0

# (title, profile arguments on a GPU, the same at toy size on a CPU)
CONFIGS = [
    ("small_cnn, Fashion-MNIST, batch 128", ["--model", "small_cnn", "--dataset", "fashion-mnist", "--batch-size", "128", "--aa", "none"],
     ["--model", "tiny_cnn", "--dataset", "fashion-mnist", "--batch-size", "16", "--aa", "none"]),
    ("ResNet-18, CIFAR-10 shape, batch 512", ["--model", "resnet18", "--dataset", "cifar10", "--batch-size", "512", "--aa", "standard", "--eval-images", "256"],
     ["--model", "tiny_cnn", "--dataset", "cifar10", "--batch-size", "16", "--aa", "quick"]),
    ("WRN-34-10, CIFAR-10 shape, batch 128", ["--model", "wrn_34_10", "--dataset", "cifar10", "--batch-size", "128", "--aa", "none", "--eval-images", "128"],
     ["--model", "tiny_cnn", "--dataset", "cifar10", "--batch-size", "16", "--aa", "none"]),
]  # fmt: skip
TOY = ["--steps", "1", "--rounds", "1", "--eval-images", "8", "--precisions", "fp32"]


def bench(*args: str, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, text=True, capture_output=True, check=False, **kw)


def profile(args: list[str], device: str, cache: Path) -> dict[str, Any]:
    out = bench("profile", *args, "--device", device, "--cache-dir", str(cache), "--json")
    if out.returncode != 0:
        raise SystemExit(f"gpu-check: bench profile {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def quickstart(suite: str, device: str, work: Path, extra: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    out = bench("run", suite, "--device", device, "--quiet", "--cache-dir", str(work / "cache"), "--results-dir", str(work / "results"), *extra)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"gpu-check: bench run {suite} failed:\n{out.stderr[-3000:]}")
    board = Path(re.search(r"^leaderboard: (.+)$", out.stdout, re.MULTILINE).group(1))  # as `bench run` prints it
    rows = json.loads((board.parent / "results.json").read_text())
    return {"suite": suite, "seconds": seconds, "precisions": sorted({str(r.get("train_precision")) for r in rows}),
            "leaderboard": board.read_text()}  # fmt: skip


def report(device: str, profiles: list[tuple[str, dict[str, Any]]], qs: dict[str, Any], dry: bool) -> str:
    first = profiles[0][1]
    lines = [
        f"# GPU check: `{first['device']}`" + (" (dry run on the CPU: toy sizes, not a measurement)" if dry else ""),
        "",
        (f"Written by `scripts/gpu-check{' --dry-run' if dry else ''}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
         f"torch threads {first['threads']}; `precision: auto` resolves to {first['auto']}."),
        "",
    ]
    targets = []
    for title, r in profiles:
        lines += [f"## {title}", "", f"`bench profile` model {r['model']}, data {r['dataset']}, defence {r['defence']}, batch {r['batch_size']}; "
                  "peak matmul " + ", ".join(f"{p} {v / 1e12:.1f} TFLOP/s" for p, v in r["peak_matmul_flop_s"].items()), "",
                  "| training step | img/s | TFLOP/s | MFU | vs textbook |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        for row in r["train"]:
            flop = f"{row['flop_s'] / 1e12:.2f}" if "flop_s" in row else ""
            mfu = f"{100 * row['mfu']:.1f} %" if "mfu" in row else ""
            lines.append(f"| {row['config']} | {row['img_s']:.1f} | {flop} | {mfu} | {row['speedup']:.2f}x |")
        lines += ["", "| evaluation | precision | model | img/s |", "|---|---|---|---:|"]
        lines += [f"| {e['attack']} | {e['precision']} | {e['paths']} | {e['img_s']:.1f} |" for e in r["eval"]]
        lines.append("")
        if title.startswith("ResNet-18"):
            mfu = r["mfu"].get("bf16")
            aa = max((e["img_s"] for e in r["eval"] if e["attack"].startswith("AutoAttack")), default=None)
            targets.append(("ResNet-18 PGD-10 AT MFU (bf16 peak)", f"{100 * mfu:.1f} %" if mfu is not None else "no bf16 here",
                            f">= {100 * MFU_TARGET:.0f} %", mfu is not None and mfu >= MFU_TARGET))  # fmt: skip
            targets.append(("AutoAttack on ResNet-18, img/s (best path)", f"{aa:.1f}" if aa else "not run", f">= {AA_TARGET:.0f}",
                            aa is not None and aa >= AA_TARGET))  # fmt: skip
    lines += [f"## {qs['suite']} end to end", "", f"{qs['seconds']:.1f} s from an empty cache; training ran {', '.join(qs['precisions'])}.", "",
              "<details><summary>leaderboard</summary>", "", qs["leaderboard"], "</details>", ""]  # fmt: skip
    if targets:
        lines += ["## Targets (issue #22)", "", "| target | measured | wanted | met |", "|---|---:|---:|---|"]
        lines += [f"| {name} | {value} | {wanted} | {'yes' if ok else 'no'} |" for name, value, wanted, ok in targets]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the CUDA device (default: cuda)")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "perf", help="where gpu-<device>.md goes (default: results/perf)")
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else args.device
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu-check: no CUDA device here (use --dry-run to check the script on a CPU)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        profiles = []
        for title, gpu_args, toy_args in CONFIGS:
            print(f"gpu-check: profiling {title}", file=sys.stderr, flush=True)
            profiles.append((title, profile(toy_args + TOY if args.dry_run else gpu_args, device, work / "cache")))
        print("gpu-check: the quickstart end to end", file=sys.stderr, flush=True)
        if args.dry_run:
            qs = quickstart("suites/smoke.yaml", device, work, ["--set", "train.epochs=1", "--set", "wa=[none]", "--set", "analysis=null", "--set", "train.precision=auto", "--set", "eval.precision=auto"])
        else:
            qs = quickstart("suites/quickstart.yaml", device, work, [])
    slug = re.sub(r"[^a-z0-9]+", "-", profiles[0][1]["device"].lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-{slug}.md"
    path.write_text(report(device, profiles, qs, args.dry_run))
    print(f"gpu-check: written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
