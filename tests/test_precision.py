"""Precision paths (issue #22): ``auto`` resolved where a task runs, fp16 with loss scaling, TF32 keyed,
the warning for an emulated precision, ``--workers auto``. Nothing here is timed: the probe's decision
is tested through its inputs, and through oneDNN's own ISA limit (``ONEDNN_MAX_CPU_ISA=AVX2`` makes bf16
emulated on any x86 CPU, as it is on an AVX2-only one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.attacks.pgd import pgd
from bench.commands.cli import main
from bench.core import params as params_mod
from bench.core.modes import frozen_eval
from bench.core.stats import discordant, mcnemar_exact
from bench.device import native
from bench.device.precision import InputGradScaling, attack_model, autocast, direction_logits
from bench.models import build_model
from bench.plan.expand import expand
from bench.registry import DEFENCES
from bench.suite.load import load_suite
from bench.training.train import train_step
from bench.types import ThreatModel, TrainContext
from tests.conftest import MINIMAL_SUITE, ROOT, write_suite

THREAT = ThreatModel("Linf", Fraction(8, 255), "8/255")
CTX = TrainContext(0, 0, 4, (2,), THREAT, 4)


def tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("tiny_cnn", num_classes=4, shape=(3, 12, 12), width=8)


def batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 12, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


# ------------------------------------------------------------------------------------ auto, resolved


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch):
    """Set what the CPU probe measured, without measuring."""

    def set_ratios(bf16: float, fp16: float) -> None:
        native._memo.clear()
        monkeypatch.setattr(native, "cpu_speeds", lambda cache_dir=None: {"ratios": {"bf16": bf16, "fp16": fp16}, "flags": []})

    yield set_ratios
    native._memo.clear()


@pytest.mark.parametrize(
    "bf16,fp16,expected",
    [(1.9, 0.07, "bf16"), (0.07, 0.07, "fp32"), (1.1, 0.5, "fp32"), (0.2, 1.6, "fp16"), (1.6, 1.6, "bf16")],
)
def test_auto_on_a_cpu_is_the_fastest_native_path(probed, bf16: float, fp16: float, expected: str) -> None:
    probed(bf16, fp16)
    assert native.resolve("auto", torch.device("cpu")) == expected


def test_explicit_precisions_are_themselves_and_tf32_is_fp32_off_cuda(probed) -> None:
    probed(0.05, 0.05)
    cpu = torch.device("cpu")
    assert [native.resolve(p, cpu) for p in ("fp32", "bf16", "fp16", "tf32")] == ["fp32", "bf16", "fp16", "fp32"]


@pytest.mark.parametrize("capability,expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 0), "fp16"), ((5, 2), "fp32")])
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch: pytest.MonkeyPatch, capability, expected: str) -> None:
    """bf16 from Ampere (8.0), fp16 with loss scaling on V100/T4/RTX 20 (7.x) and P100 (6.0), else fp32;
    decided on the worker's device, never by a probe."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(native, "cpu_speeds", lambda cache_dir=None: pytest.fail("no CPU probe for a CUDA device"))
    assert native.resolve("auto", torch.device("cuda", 0)) == expected
    assert native.resolve("tf32", torch.device("cuda", 0)) == "tf32"


def test_the_probe_is_kept_per_machine_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    native._memo.clear()
    calls = []
    monkeypatch.setattr(native, "probe", lambda *a: calls.append(1) or {"bf16": 1.5, "fp16": 0.1})
    record = native.cpu_speeds(tmp_path)
    files = list((tmp_path / "perf").glob("native-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["ratios"] == {"bf16": 1.5, "fp16": 0.1}
    native._memo.clear()  # a new process: read from the cache, not measured again
    assert native.cpu_speeds(tmp_path)["ratios"] == record["ratios"] and calls == [1]
    files[0].write_text("{not json")  # damaged: measured again, never trusted
    native._memo.clear()
    native.cpu_speeds(tmp_path)
    assert calls == [1, 1]
    native._memo.clear()


def test_the_probe_sees_bf16_emulated_when_onednn_is_limited_to_avx2(tmp_path: Path) -> None:
    """The real probe in a process whose oneDNN may use AVX2 only (as on an AVX2-only EPYC, where bf16
    trained at 0.21x fp32): auto resolves to fp32 and the explicit bf16 of a suite is warned about."""
    code = (
        "import json, torch, bench.device.native as n\n"
        "r = n.cpu_speeds()\n"
        "print(json.dumps({'ratios': r['ratios'], 'auto': n.resolve('auto', torch.device('cpu')),"
        " 'warning': n.emulation_warning('bf16', torch.device('cpu'))}))\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ratios"]["bf16"] < native.EMULATED_RATIO and result["auto"] == "fp32"
    assert "bf16 runs at" in result["warning"] and "use precision: auto" in result["warning"]


def test_validate_and_run_warn_in_one_line_naming_the_file_and_field(tmp_path: Path, probed, capsys: pytest.CaptureFixture) -> None:
    probed(0.08, 0.07)
    text = MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 1, precision: bf16}") + "eval: {precision: tf32}\n"
    suite = write_suite(tmp_path / "s.yaml", text)
    assert main(["validate", str(suite), "--device", "cpu", "--cache-dir", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"bench: warning: {suite}: train.precision: bf16 runs at 0.08x fp32 on this CPU (not native here); use precision: auto" in err
    assert any(line.startswith(f"bench: warning: {suite}: eval.precision: tf32 is a CUDA") for line in err)
    probed(1.9, 0.07)  # native bf16: nothing to say about it
    main(["validate", str(suite), "--device", "cpu", "--cache-dir", str(tmp_path / "c")])
    assert not any("train.precision" in line for line in capsys.readouterr().err.splitlines())


# ------------------------------------------------------------------------------------------- keys


def test_auto_fp16_and_tf32_are_keyed_as_written_and_fp32_keys_are_unchanged(tmp_path: Path) -> None:
    def keys(train: str, ev: str) -> tuple[str, str]:
        text = MINIMAL_SUITE.replace("train: {epochs: 1}", f"train: {{epochs: 1{train}}}") + (f"eval: {{{ev}}}\n" if ev else "")
        plan = expand(load_suite(write_suite(tmp_path / "s.yaml", text)))
        return plan.train_jobs[0].key, plan.eval_jobs[0].key

    base = keys("", "")
    assert keys(", precision: fp32", "precision: fp32") == base  # the default stays out of every key
    seen = {keys(f", precision: {p}", f"precision: {p}") for p in ("bf16", "fp16", "tf32", "auto")}
    assert len(seen) == 4 and base not in seen
    train, _ = keys(", precision: auto", "precision: auto")
    assert keys(", precision: auto", "")[0] == train and keys("", "precision: auto")[1] != base[1]


def test_a_run_records_the_path_auto_ran_in_manifests_rows_and_the_header(tmp_path: Path, probed) -> None:
    probed(1.9, 0.07)  # as on an AVX512-BF16 or AMX CPU
    text = MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 1, precision: auto, subset: 64}")
    suite = write_suite(tmp_path / "s.yaml", text + "eval: {n_examples: 32, batch_size: 32, precision: auto}\n")
    args = ["run", str(suite), "--device", "cpu", "--quiet", "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    assert main(args) == 0
    rows = json.loads((tmp_path / "r" / "t" / "results.json").read_text())
    assert {r["train_precision"] for r in rows} == {"bf16"} and {r["eval_precision"] for r in rows if r["attack"] != "Worst case"} == {"bf16"}
    board = (tmp_path / "r" / "t" / "leaderboard.md").read_text()
    assert "Precision: training `auto` (ran bf16), attacks `auto` (ran bf16)" in board and "fp32 parity: a random slice" in board
    from bench.engine.store import Store

    plan, store = expand(load_suite(suite)), Store(tmp_path / "c")
    assert store.read_json("train", plan.train_jobs[0].key, "manifest.json")["fast_paths"]["precision_ran"] == "bf16"
    metrics = store.read_json("eval", plan.eval_jobs[0].key, "metrics.json")
    assert metrics["parity"]["path"] == "bf16" and metrics["parity"]["n"] == 16


# ---------------------------------------------------------------------------------------------- fp16


def step(defence: str, precision: str, scaler: torch.amp.GradScaler | None = None) -> tuple[float, torch.Tensor]:
    """Loss and flattened parameter gradients of one training step (lr 0; the gradients after the
    step, which a GradScaler has unscaled in place)."""
    model = tiny()
    entry = DEFENCES.get(defence)
    p = params_mod.build(entry.params, {"steps": 3} if "steps" in entry.params.__dataclass_fields__ else {}, defence)
    x, y = batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    opt.zero_grad = lambda set_to_none=True: None
    torch.manual_seed(2)
    out = train_step(model, opt, entry.fn, x, y, p, CTX, precision, scaler=scaler)
    return float(out.loss.detach()), torch.cat([q.grad.flatten() for q in model.parameters()])


@pytest.mark.parametrize("defence", ["standard", "pgd_at", "trades"])
def test_fp16_training_step_with_loss_scaling_matches_fp32(defence: str) -> None:
    loss32, g32 = step(defence, "fp32")
    scaler = torch.amp.GradScaler("cpu")
    loss16, g16 = step(defence, "fp16", scaler)
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert F.cosine_similarity(g16, g32, dim=0) > 0.98
    assert not torch.equal(g16, g32) and scaler.get_scale() == 2.0**16  # fp16 ran, and the scaler stepped


def test_a_step_whose_scaled_gradients_overflow_is_skipped_and_the_scale_lowered() -> None:
    model, x, y = tiny(), *batch()
    before = [q.detach().clone() for q in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # overflows fp16 at once
    train_step(model, opt, DEFENCES.get("standard").fn, x, y, DEFENCES.get("standard").params(), CTX, "fp16", scaler=scaler)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and scaler.get_scale() < 2.0**60


def confident(k: float = 400.0) -> torch.nn.Module:
    """tiny_cnn with its logits scaled by ``k``: the same predictions, softmax gradients far below fp16's range."""
    model = tiny().eval()
    sharpen(model, k)
    return model


def sharpen(model: torch.nn.Module, k: float) -> None:
    """Scale the logits of ``model`` by ``k`` (its last linear layer)."""
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.mul_(k)
        head.bias.mul_(k)


def input_grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with autocast(x.device, precision):
        loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


def test_fp16_input_gradients_underflow_without_the_scaling_view_and_match_fp32_with_it() -> None:
    model = confident()
    x, _ = batch(32)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point confidently right: gradients of order e^-margin
    zero = lambda g: float((g.flatten(1).abs().amax(1) == 0).float().mean())  # noqa: E731
    g32, raw, scaled = input_grad(model, x, y, "fp32"), input_grad(model, x, y, "fp16"), input_grad(InputGradScaling(model), x, y, "fp16")
    assert zero(g32) == 0.0 and zero(raw) > 0.5  # what fp16 without scaling does: most gradients exactly zero
    assert zero(scaled) == 0.0
    assert cosines(scaled, g32).min() > 0.95
    assert torch.allclose(scaled.abs().amax(), g32.abs().amax(), rtol=0.05)  # the factors were divided out again
    assert attack_model(model, "bf16") is model and attack_model(model, "fp32") is model


def test_the_scaling_view_uses_one_factor_when_examples_interact() -> None:
    """In train mode (BatchNorm batch statistics couple the examples) per-example factors would not be an
    exact inverse: one factor for the batch gives fp32's gradient direction for every example."""
    model = tiny().train()
    x, y = batch(16)
    g32 = input_grad(model, x, y, "fp32")
    scaled = input_grad(InputGradScaling(model), x, y, "fp16")
    assert cosines(scaled, g32).min() > 0.95


def test_awps_weight_direction_survives_fp16_where_raw_gradients_underflow() -> None:
    """AWP perturbs each weight along its normalised gradient: under fp16 a confident model's weight gradients
    round to zero (AWP would silently be PGD-AT); through ``direction_logits`` they keep fp32's direction."""
    from defenses.awp import weight_perturbation

    x, _ = batch(32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
        sharpen(model, 25.0 / float((top2[:, 0] - top2[:, 1]).min()))  # every margin >= 25: e^-25 is below fp16's 6e-8
        y = model(x).argmax(1)
    named = [(n, p) for n, p in model.named_parameters() if p.ndim > 1 and "weight" in n]

    def raw_grads() -> list[torch.Tensor]:
        with autocast(x.device, "fp16"):
            loss = F.cross_entropy(model(x), y)
        return list(torch.autograd.grad(loss, [p for _, p in named]))

    assert sum(float(g.abs().sum()) for g in raw_grads()) == 0.0  # in fp16 every weight gradient is exactly zero
    v32 = weight_perturbation(model, x, y, 0.01)
    with autocast(x.device, "fp16"):
        v16 = weight_perturbation(model, x, y, 0.01)
    for name, _ in named:
        assert float(v16[name].norm()) == pytest.approx(float(v32[name].norm()), rel=1e-3)  # gamma x ||w||, not zero
        assert float(cosines(v16[name].flatten()[None], v32[name].flatten()[None])) > 0.95
    assert direction_logits(torch.ones(2, 3)).dtype == torch.float32  # fp32 and bf16 logits pass as they are


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example cosine of two gradients, in float64 (confident points' gradients are far below
    ``F.cosine_similarity``'s epsilon)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


@pytest.mark.realdata
def test_fp16_pgd_is_not_weaker_than_fp32_on_a_trained_model(fmnist: None) -> None:
    """A tiny_cnn trained on real Fashion-MNIST, its logits sharpened so that fp16 softmax gradients
    underflow: PGD in fp16 through the scaling view leaves the same robust points as fp32 (exact McNemar
    on per-sample flags), while fp16 without it is significantly weaker (the check can fail)."""
    from bench.data import load_dataset
    from bench.registry import DATASETS

    splits = load_dataset("fashion-mnist", params_mod.build(DATASETS.get("fashion-mnist").params, {}, "d"), None)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", num_classes=10, shape=splits.info.shape, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = splits.train_x[:8000].float() / 255, splits.train_y[:8000]
    for i in range(0, len(y), 100):
        opt.zero_grad()
        F.cross_entropy(model(x[i : i + 100]), y[i : i + 100]).backward()
        opt.step()
    model.eval()
    sharpen(model, 30)
    xt, yt = splits.test_x[:300].float() / 255, splits.test_y[:300]
    with torch.no_grad(), frozen_eval(model):
        right = (model(xt).argmax(1) == yt).numpy()
    assert right.mean() > 0.5

    def robust(precision: str, scaled: bool = True) -> np.ndarray:
        torch.manual_seed(1)
        with frozen_eval(model), autocast(xt.device, precision):
            x_adv = pgd(attack_model(model, precision) if scaled else model, xt, yt, 0.03, 0.0075, 5)
        with torch.no_grad():
            return (model(x_adv.float()).argmax(1) == yt).numpy() & right

    fp32, fp16, unscaled = robust("fp32"), robust("fp16"), robust("fp16", scaled=False)
    stronger16, stronger32 = discordant(~fp16, ~fp32)
    assert mcnemar_exact(stronger16, stronger32) >= 0.05 and abs(fp16.mean() - fp32.mean()) < 0.03
    assert mcnemar_exact(*discordant(~unscaled, ~fp32)) < 0.05 and unscaled.mean() > fp32.mean()


def test_a_resumed_run_keeps_the_path_its_state_ran(tmp_path: Path) -> None:
    """The saved training state records its path and the GradScaler; a resume on a device where auto
    resolves differently continues in the path it started with."""
    from bench.core.progress import Progress
    from bench.engine.store import Store
    from bench.engine.worker import WorkerContext
    from bench.training.train import TrainState, train_model

    text = MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 2, subset: 32, precision: auto}")
    plan = expand(load_suite(write_suite(tmp_path / "s.yaml", text)))
    ctx = WorkerContext(plan, Store(tmp_path / "c"), torch.device("cpu"))
    job, state = plan.train_jobs[0], tmp_path / "state"
    train_model(job, plan.suite, ctx.splits, ctx.train_data, ctx.device, Progress(False), state_dir=state, stop_after=1, precision="fp16")
    saved = torch.load(state / TrainState.FILE, weights_only=True)
    assert saved["precision"] == "fp16" and saved["scaler"]["scale"] == 2.0**16
    result = train_model(job, plan.suite, ctx.splits, ctx.train_data, ctx.device, Progress(False), state_dir=state, precision="bf16")
    assert result.resumed_from == 1 and result.precision == "fp16"


# --------------------------------------------------------------------------------------- workers auto


def test_workers_auto_is_one_per_core_up_to_the_tasks_that_can_run_at_once(tmp_path: Path) -> None:
    from bench.engine.executors.local import auto_workers, plan_width

    def plan_of(defences: str, attacks: str):
        text = MINIMAL_SUITE.replace("defences: [standard]", f"defences: {defences}").replace("attacks: [fgsm]", f"attacks: {attacks}")
        return expand(load_suite(write_suite(tmp_path / "s.yaml", text)))

    nothing = lambda kind, key: False  # noqa: E731
    one = plan_of("[standard]", "[fgsm]")  # a training, then its evaluation and sanity check
    assert plan_width(one.tasks, nothing) == 2
    assert auto_workers("cpu", one.tasks, nothing, cpus=8) == 2 and auto_workers("cpu", one.tasks, nothing, cpus=1) == 1
    assert auto_workers("cpu", one.tasks, lambda kind, key: True, cpus=8) == 1  # nothing left: one, in this process
    two = plan_of("[standard, pgd_at: {steps: 1}]", "[fgsm, pgd]")  # 2 trainings, then 4 evaluations + 2 sanity checks
    assert plan_width(two.tasks, nothing) == 6 and auto_workers("cpu", two.tasks, nothing, cpus=2) == 2
    assert plan_width(two.tasks, lambda kind, key: kind == "eval") == 2  # what is done does not count


def test_workers_takes_auto_and_refuses_words(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    suite = write_suite(tmp_path / "s.yaml", MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 1, subset: 32}") + "eval: {n_examples: 16}\n")
    args = ["run", str(suite), "--device", "cpu", "--quiet", "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    assert main([*args, "--workers", "auto"]) == 0
    with pytest.raises(SystemExit) as e:
        main([*args, "--workers", "many"])
    assert e.value.code == 2 and "expected a number of processes or auto" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_dry_path_writes_its_report(tmp_path: Path) -> None:
    """scripts/gpu-check --dry-run: every step of the GPU check (three profiles, a suite end to end, the
    report) at toy sizes on the CPU, so the check is known to work before a GPU is lent."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (report,) = tmp_path.glob("gpu-*.md")
    text = report.read_text()
    assert "dry run on the CPU" in text and "`precision: auto` resolves to" in text
    for title in ("small_cnn, Fashion-MNIST", "ResNet-18, CIFAR-10 shape", "WRN-34-10", "suites/smoke.yaml end to end"):
        assert f"## {title}" in text
    assert "| reference (textbook) |" in text and "# Leaderboard: smoke" in text
    assert subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True, cwd=ROOT, check=False).returncode == 2


def test_tf32_is_a_scoped_cuda_setting_and_fp32_is_ieee(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() makes CUDA fp32 IEEE (PyTorch lets cuDNN convolutions use TF32 by default); tf32 sets
    TF32 for its block only, forward and backward alike; off CUDA both are nothing."""
    from bench.device.precision import configure, tf32_scope

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    saved = matmul.fp32_precision, conv.fp32_precision
    try:
        cuda = torch.device("cuda")
        configure(cuda)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee") and torch.backends.cudnn.benchmark
        with autocast(cuda, "tf32"):
            assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        with tf32_scope(cuda, "tf32"):
            assert conv.fp32_precision == "tf32"
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        with autocast(torch.device("cpu"), "tf32"), tf32_scope(torch.device("cpu"), "tf32"):
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved
