"""Quickstart phase ratios in ONE process: one training epoch of each quickstart defence, fp32 (main's
settings) vs bf16 + channels_last (the edited quickstart), interleaved; and one analysis with and
without the shared adversarial examples (the old cost = new + the PGD-20 runs no longer repeated)."""

import dataclasses
import sys
import time
from functools import partial

import torch

from bench.analysis.run import analyze
from bench.attacks.pgd import pgd, step_size
from bench.core.modes import frozen_eval
from bench.core.progress import Progress
from bench.engine.store import Store
from bench.engine.worker import WorkerContext
from bench.plan.expand import expand
from bench.registry import ATTACKS
from bench.suite.load import load_suite
from bench.training.train import train_model

suite = load_suite("suites/quickstart.yaml")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
dev = torch.device("cpu")
plain = dataclasses.replace(suite.train, epochs=1, precision="fp32", channels_last=False)
fast = dataclasses.replace(suite.train, epochs=1, precision="bf16", channels_last=True)
plan = expand(suite)
ctx = WorkerContext(plan, Store("/tmp/perf-phase-cache"), dev)
data, splits = ctx.train_data, ctx.splits
totals = {"fp32": 0.0, "bf16+cl": 0.0}
for r in range(rounds):
    for job in plan.train_jobs:
        for name, spec in (("fp32", plain), ("bf16+cl", fast)):
            s = dataclasses.replace(suite, train=spec)
            t = time.perf_counter()
            train_model(job, s, splits, data, dev, Progress(False))
            dt = time.perf_counter() - t
            totals[name] += dt
            print(f"round {r} {job.display:8s} {name:8s} {dt:6.1f}s", flush=True)
print("train epoch totals", totals, "ratio", totals["bf16+cl"] / totals["fp32"], flush=True)
# analysis: one model (random weights are fine for timing), new code, and the PGD-20 runs the old code repeated
from bench.models import build

info = splits.info
model = build(suite.model.name, suite.model.params, info.num_classes, info.shape, info.mean, info.std)
_, x, y = ctx.test_data(suite.analysis.n_images)
x = x.float() / 255
threat = suite.threat
attacks = {}
for a, c in zip(plan.attacks, plan.columns):
    fn = ATTACKS.get(a.name)
    if fn.caps["family"] in ("fgsm", "iterative"):
        attacks[c] = partial(lambda m, xb, yb, f, p: f(m, xb, yb, threat, p), f=fn.fn, p=a.params)
t = time.perf_counter()
analyze(model, x, y, threat, suite.analysis, 0, attacks)
new = time.perf_counter() - t
eps = threat.eps_float
with frozen_eval(model):
    t = time.perf_counter()
    pgd(model, x, y, eps, step_size(suite.analysis.attack_alpha, eps), suite.analysis.attack_steps)
    one = time.perf_counter() - t
print(
    f"analysis new {new:.1f}s; one PGD-20 on {len(y)} images {one:.1f}s; old = new + 3 x PGD-20 = {new + 3 * one:.1f}s; ratio {new / (new + 3 * one):.2f}"
)
