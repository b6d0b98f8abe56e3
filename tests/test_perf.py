"""Fast paths (bench/device/precision.py, train.precision / channels_last / compile, eval.precision / cascade),
input-only attack gradients, no host syncs in the step loop, the FLOP model and ``bench profile``.

Parity tests compare the fast path with the plain one on fixed inputs; nothing here is timed.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.attacks import attack
from bench.commands import profile as profile_mod
from bench.commands.cli import main
from bench.core import params as params_mod
from bench.core.errors import ConfigError
from bench.core.modes import frozen_eval
from bench.device import precision as precision_mod
from bench.evaluation.evaluate import parity, robust_flags
from bench.models import build_model
from bench.plan import cost
from bench.plan.expand import expand
from bench.registry import ATTACKS, DEFENCES, MODELS
from bench.suite.load import load_suite
from bench.training.train import train_step
from bench.types import ThreatModel, TrainContext
from tests.conftest import MINIMAL_SUITE, write_suite

THREAT = ThreatModel("Linf", Fraction(8, 255), "8/255")

CTX = TrainContext(0, 0, 4, (2,), THREAT, 4)


def tiny(channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny_cnn", num_classes=4, shape=(3, 12, 12), width=8)
    return precision_mod.prepare(model, channels_last)


def batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 12, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


def step_grads(model: torch.nn.Module, defence: str = "pgd_at", ctx: TrainContext = CTX, **kw) -> tuple[float, torch.Tensor]:
    """Loss and flattened parameter gradients of one bench training step (lr 0: weights unchanged)."""
    entry = DEFENCES.get(defence)
    p = params_mod.build(entry.params, {"steps": 3} if "steps" in entry.params.__dataclass_fields__ else {}, defence)
    x, y = batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    opt.zero_grad = lambda set_to_none=True: None  # keep the gradients the step computed
    torch.manual_seed(2)
    out = train_step(model, opt, entry.fn, x, y, p, ctx, **kw)
    return float(out.loss.detach()), torch.cat([q.grad.flatten() for q in model.parameters()])


def test_bf16_training_step_matches_fp32_within_tolerance() -> None:
    loss32, g32 = step_grads(tiny())
    loss16, g16 = step_grads(tiny(), precision="bf16")
    assert loss16 == pytest.approx(loss32, rel=0.03)
    assert F.cosine_similarity(g16, g32, dim=0) > 0.98
    assert not torch.equal(g16, g32)  # bf16 really ran


def test_channels_last_step_matches_contiguous() -> None:
    loss, g = step_grads(tiny(), "standard")
    loss_cl, g_cl = step_grads(tiny(channels_last=True), "standard", channels_last=True)
    assert loss_cl == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(g_cl, g, rtol=1e-4, atol=1e-6)
    # with an attack, float rounding can flip a sign step of PGD: identical-ish
    loss, g = step_grads(tiny())
    loss_cl, g_cl = step_grads(tiny(channels_last=True), channels_last=True)
    assert loss_cl == pytest.approx(loss, rel=1e-3)
    assert F.cosine_similarity(g_cl, g, dim=0) > 0.98


def test_compiled_step_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    # backend "eager": the same dynamo graph capture without a C++ build (inductor is minutes on CI)
    monkeypatch.setattr(precision_mod, "COMPILE_BACKEND", "eager")
    model = precision_mod.prepare(tiny(), compile=True)
    names = list(tiny().state_dict())
    loss, g = step_grads(tiny())
    loss_c, g_c = step_grads(model)
    assert list(model.state_dict()) == names  # weights save and load as before (no _orig_mod. prefix)
    assert loss_c == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(g_c, g)
    # AWP deep-copies the compiled model for its proxy: the copy must run its own weights
    loss, g = step_grads(tiny(), "awp")
    loss_c, g_c = step_grads(precision_mod.prepare(tiny(), compile=True), "awp")
    assert loss_c == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(g_c, g)


@pytest.mark.parametrize("defence", sorted(e.name for e in DEFENCES.entries()))
def test_training_step_has_no_host_sync(defence: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("host sync inside the training step")

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    model = tiny()
    entry = DEFENCES.get(defence)
    p = params_mod.build(entry.params, {}, defence)
    x, y = batch()
    ctx = TrainContext(3, 10, 4, (2,), THREAT, 4)  # past the milestone: FR/SAR regularisers active
    train_step(model, torch.optim.SGD(model.parameters(), lr=0.01), entry.fn, x, y, p, ctx, "bf16", True)


def _grad_watch(model: torch.nn.Module) -> list[int]:
    fired = [0]
    for q in model.parameters():
        q.register_hook(lambda g: fired.__setitem__(0, fired[0] + 1))
    return fired


ATTACK_PARAMS = {"autoattack": {"version": "custom", "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "n_iter": 2,
                                "n_queries": 3, "n_target_classes": 1},
                 "apgd-ce": {"n_iter": 2}, "apgd-t": {"n_iter": 2, "n_target_classes": 1}, "square": {"n_queries": 3},
                 "pgd": {"steps": 2}, "cw": {"steps": 2}}  # fmt: skip


@pytest.mark.parametrize("name", sorted(e.name for e in ATTACKS.entries()))
def test_every_attack_takes_input_only_gradients(name: str) -> None:
    model = tiny()
    fired = _grad_watch(model)
    x, y = batch(8)
    attack(name, model, x, y, eps="8/255", **ATTACK_PARAMS.get(name, {}))
    assert fired[0] == 0
    assert all(q.grad is None for q in model.parameters())


@pytest.mark.parametrize("defence", sorted(e.name for e in DEFENCES.entries()))
def test_every_defence_crafts_with_input_only_gradients(defence: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import defenses._common as common

    model = tiny()
    fired = _grad_watch(model)
    seen: list[int] = []
    real = common.pgd

    def watched(*a, **k):
        before = fired[0]
        out = real(*a, **k)
        seen.append(fired[0] - before)
        return out

    monkeypatch.setattr(common, "pgd", watched)
    entry = DEFENCES.get(defence)
    x, y = batch()
    entry.fn(model, x, y, params_mod.build(entry.params, {}, defence), TrainContext(3, 10, 4, (2,), THREAT, 4))
    if defence != "standard":
        assert seen, "the defence's adversary was not crafted through defenses._common"
    assert seen == [0] * len(seen)


def test_fast_path_options_keep_existing_keys_and_key_what_changes_results(tmp_path: Path) -> None:
    def plan(train: str = "", ev: str = ""):
        text = MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 1" + train + "}") + "attacks: [fgsm, pgd]\n"
        text = text.replace("attacks: [fgsm]\n", "") + ("eval: {" + ev + "}\n" if ev else "")
        return expand(load_suite(write_suite(tmp_path / "s.yaml", text)))

    base = plan()
    same = plan(", precision: fp32, channels_last: true, compile: true", "precision: fp32, cascade: false, channels_last: true")
    assert [t.key for t in same.tasks] == [t.key for t in base.tasks]
    assert [t.key for t in plan(", fuse_bn: true").tasks] == [t.key for t in base.tasks]
    assert "precision" not in base.train_jobs[0].spec["train"]  # keys of caches made before the options exist
    bf16 = plan(", precision: bf16")
    assert bf16.train_jobs[0].key != base.train_jobs[0].key
    # what bf16 covers is keyed with it: bf16 entries from before validation ran in bf16 are not reused
    assert bf16.train_jobs[0].spec["train"]["precision_scope"] == "loss, validation, BN pass"
    assert "precision_scope" not in base.train_jobs[0].spec["train"]
    cascade = plan(ev="cascade: true")
    assert [j.key for j in cascade.sanity_jobs] == [j.key for j in base.sanity_jobs]
    first, second = cascade.eval_jobs[:2]
    assert first.key == base.eval_jobs[0].key and first.after == ()
    assert second.after == (first.key,) and second.key != base.eval_jobs[1].key
    assert ("eval", first.key) in second.needs
    low = plan(ev="precision: bf16")
    assert low.eval_jobs[0].key != base.eval_jobs[0].key
    # the sanity checks' large-eps PGD runs in eval.precision too, so their key follows it
    assert [j.key for j in low.sanity_jobs] != [j.key for j in base.sanity_jobs]


def test_eval_precision_keys_the_analyses_only_when_bf16(tmp_path: Path) -> None:
    analysis = "analysis: {rows: [standard], n_images: 8, heatmap_images: 2, attack_steps: 2}\n"

    def analysis_keys(ev: str) -> list[str]:
        text = MINIMAL_SUITE + analysis + ("eval: {" + ev + "}\n" if ev else "")
        return [j.key for j in expand(load_suite(write_suite(tmp_path / "s.yaml", text))).analysis_jobs]

    base = analysis_keys("")
    assert analysis_keys("precision: fp32, channels_last: true, cascade: true, batch_size: 7") == base
    assert analysis_keys("precision: bf16") != base


def test_parity_slice_is_a_sixteenth_between_16_and_64_points() -> None:
    from bench.evaluation.parity import parity_size

    assert [parity_size(n) for n in (5, 16, 200, 500, 1000, 10000)] == [5, 16, 16, 31, 62, 64]


def test_leaderboard_note_pools_the_parity_slices() -> None:
    from bench.evaluation.parity import parity_note

    rows = [
        {"parity_pp": -6.25, "parity_n": 16, "parity_flips": 1, "parity_low_only": 0, "parity_fp32_only": 1, "display_name": "a"},
        {"parity_pp": 0.0, "parity_n": 16, "parity_flips": 2, "parity_low_only": 1, "parity_fp32_only": 1, "display_name": "a"},
        {"robust_acc": 0.5},
    ]
    text = parity_note(rows).replace("−", "-")
    assert "2 evaluations (32 points in all)" in text and "-3.12 pp pooled" in text
    assert "1 point(s) robust only in the low precision, 2 only in fp32" in text and "no row differs significantly" in text
    lo, hi = (float(v) for v in text.split("[95 % interval ")[1].split("]")[0].split(", "))
    assert lo < -3.12 < hi  # the interval of the pooled paired difference holds the estimate
    old = [{"parity_pp": -6.25, "parity_n": 16, "parity_flips": 1}]  # entries written before the counts were kept
    assert "1 per-sample flag(s) differ" in parity_note(old)
    assert parity_note([{"robust_acc": 0.5}]) == "no fp32 parity check recorded"


def test_training_validation_runs_in_the_training_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.precision bf16 (the path train_model passes): the validation attack and the logit gap's attack run under autocast."""
    import bench.training.train as train_mod

    seen = []

    def watched_pgd(model, x, *a, **kw):
        seen.append(torch.is_autocast_enabled("cpu"))
        return x.clone()

    monkeypatch.setattr(train_mod, "pgd", watched_pgd)
    model = tiny()
    xs, ys = batch(8)
    data = train_mod.TrainData(xs[:0].to(torch.uint8), ys[:0], (xs * 255).to(torch.uint8), ys)
    for precision, expected in (("fp32", False), ("bf16", True)):
        text = MINIMAL_SUITE.replace("train: {epochs: 1}", f"train: {{epochs: 1, precision: {precision}}}")
        suite = load_suite(write_suite(tmp_path / "s.yaml", text))
        seen.clear()
        train_mod.validate(model, suite, data, robust=True, precision=precision)
        train_mod.logit_gap(model, suite, data, precision=precision)
        assert seen == [expected, expected]


def test_fuse_bn_validates_the_trained_and_averaged_models_on_their_folded_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.fuse_bn: validation and the logit gap run on BN-folded views (no BatchNorm left), of the
    raw model and of the weight average; the selection keeps the live models' weights."""
    import bench.training.train as train_mod
    from bench.engine.store import Store
    from bench.engine.worker import WorkerContext

    seen: list[torch.nn.Module] = []
    for name in ("validate", "logit_gap"):
        real = getattr(train_mod, name)
        monkeypatch.setattr(train_mod, name, lambda m, *a, real=real, **k: seen.append(m) or real(m, *a, **k))
    text = MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 2, fuse_bn: true, subset: 64, val_examples: 16}")
    text = text.replace("defences: [standard]", "defences: [pgd_at: {steps: 1}]\nwa: [{kind: swa, start: 0}]")
    plan = expand(load_suite(write_suite(tmp_path / "s.yaml", text)))
    ctx = WorkerContext(plan, Store(tmp_path / "cache"), torch.device("cpu"))
    result = train_mod.train_model(plan.train_jobs[0], plan.suite, ctx.splits, ctx.train_data, ctx.device, ctx.progress)
    has_bn = lambda m: any(isinstance(q, torch.nn.BatchNorm2d) for q in m.modules())  # noqa: E731
    assert len(seen) == 2 * 3 and not any(has_bn(m) for m in seen)  # per epoch: logit gap, raw and averaged validation
    assert len({id(m) for m in seen}) == 2  # one view per model, reused every epoch
    assert all(any(k.endswith("running_mean") for k in sel.states["last"]) for sel in (result.raw, *result.averaged.values()))


@pytest.mark.parametrize(
    "text,expected",
    [
        (MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 1, precision: fp8}"), "train.precision"),
        (MINIMAL_SUITE + "eval: {cascade: maybe}\n", "eval.cascade"),
        (MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 1, fuse_bn: true, compile: true}"), "train.fuse_bn"),
        (
            MINIMAL_SUITE.replace("attacks: [fgsm]", "attacks: [fgsm, pgd: {shards: 2}]") + "eval: {cascade: true}\n",
            "eval.cascade",
        ),
    ],
)
def test_bad_fast_path_options_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        expand(load_suite(write_suite(tmp_path / "s.yaml", text)))


def test_cascade_mask_attacks_only_survivors_and_counts_the_rest_broken() -> None:
    model = tiny()
    x = (batch(8)[0] * 255).to(torch.uint8)
    with torch.no_grad(), frozen_eval(model):
        y = model(x.float() / 255).argmax(1)  # every point clean-correct
    sizes: list[int] = []

    def identity(m, xb, yb):
        sizes.append(len(xb))
        return xb.clone()

    mask = torch.tensor([True, False] * 4)
    flags = robust_flags(model, x, y, identity, 0.1, 8, "id", attack_mask=mask)
    assert sizes == [4]
    assert flags.clean.all() and (flags.robust == mask.numpy()).all()


def test_bf16_evaluation_parity_slice_reports_the_difference() -> None:
    model = tiny()
    x = (batch(8)[0] * 255).to(torch.uint8)
    with torch.no_grad(), frozen_eval(model):
        y = model(x.float() / 255).argmax(1)
    identity = lambda m, xb, yb: xb.clone()
    low = robust_flags(model, x, y, identity, 0.1, 8, "id", precision="bf16")
    low.robust[:2] = False  # as if bf16 had broken two points fp32 does not
    report = parity(model, x, y, identity, 0.1, 8, "id", low, seed=3, path="bf16")
    assert report["n"] == 8 and report["flips"] == 2 and report["low_only"] == 0 and report["fp32_only"] == 2
    assert report["robust_acc_fp32"] == 1.0 and report["diff_pp"] == pytest.approx(-25.0) and report["path"] == "bf16"
    assert report["diff_low_pp"] <= -25.0 <= report["diff_high_pp"] and report["p"] == pytest.approx(0.5)


def test_flop_model_matches_the_landscape_multipliers() -> None:
    pgd_at, trades = (DEFENCES.get(n) for n in ("pgd_at", "trades"))

    class Ref:
        def __init__(self, name, p):
            self.name, self.params = name, p

    assert cost.train_forwards(Ref("pgd_at", pgd_at.params(steps=10))) == 23
    assert cost.train_forwards(Ref("trades", trades.params(steps=10))) == 27
    assert cost.train_forwards(Ref("standard", DEFENCES.get("standard").params())) == 3
    assert cost.attack_forwards("pgd", ATTACKS.get("pgd").params(steps=20)) == 42  # 40 + clean check + final decision
    assert cost.attack_forwards("fgsm", None) == 4


@pytest.mark.parametrize("name", [n for n in MODELS.names() if not n.startswith("wrn")] + ["wrn_28_10"])
def test_forward_flops_by_hooks_equal_the_flop_counter(name: str) -> None:
    """model_flops (forward hooks, no dispatch mode) counts what torch's flop_counter formulas count."""
    shape = (1, 28, 28) if name.startswith("small_cnn") else (3, 32, 32)
    model = build_model(name, num_classes=10, shape=shape)
    with cost.FlopCount() as counter, torch.no_grad(), frozen_eval(model):
        model(torch.zeros(1, *shape))
    assert cost.model_flops(model, shape) == counter.total > 0


def test_estimates_use_the_measured_throughput(tmp_path: Path) -> None:
    """Training (a shared start's prefix included) at the measured training FLOP/s, the rest at the evaluation's."""
    text = MINIMAL_SUITE.replace("train: {epochs: 1}", "train: {epochs: 4, schedule: {name: piecewise, milestones: [2]}}")
    plan = expand(load_suite(write_suite(tmp_path / "s.yaml", text.replace("[standard]", "[pgd_at, fr]"))))
    assert {t.kind for t in plan.tasks} >= {"prefix", "train", "eval"}
    device = torch.device("cpu")
    guessed = cost.estimates(plan, device, tmp_path / "cache")
    assert set(guessed) == {t.key for t in plan.tasks} and all(v > 0 for v in guessed.values())
    assert not cost.measured(device, tmp_path / "cache")
    path = cost.measurement_path(tmp_path / "cache", device)
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2")  # unreadable: the guess, and the ETA is told so
    assert not cost.measured(device, tmp_path / "cache") and cost.estimates(plan, device, tmp_path / "cache") == guessed
    rate = cost.DEFAULT_FLOP_S["cpu"]
    path.write_text(json.dumps({"train_flop_s": {"fp32": rate * 10}, "eval_flop_s": {"fp32": rate * 100}}))
    measured = cost.estimates(plan, device, tmp_path / "cache")
    assert cost.measured(device, tmp_path / "cache")
    for task in plan.tasks:
        faster = 10 if task.kind in ("prefix", "train") else 100
        assert measured[task.key] == pytest.approx(guessed[task.key] / faster), task.label


def test_profile_cli_json_and_saved_measurement(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profile_mod, "PEAK_SECONDS", 0.02)
    args = ["profile", "--model", "tiny_cnn", "--dataset", "synthetic", "--batch-size", "16", "--steps", "1",
            "--rounds", "1", "--eval-images", "4", "--aa", "none", "--json", "--cache-dir", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"train_img_s", "mfu", "speedup_vs_reference", "fp32_speedup_vs_reference", "fp32_config"} <= set(out)
    configs = [r["config"] for r in out["train"]]
    assert configs == [
        "reference (textbook)",
        "bench fp32",
        "bench fp32 channels_last",
        "bench bf16",
        "bench bf16 channels_last",
        "bench fp32 channels_last fuse_bn",
        "bench bf16 channels_last fuse_bn",
    ]
    assert out["train_flops_in_forwards"] == pytest.approx(
        23, rel=0.05
    )  # PGD-10 AT: 2 * 10 + 3 F (input-only gradients)
    saved = json.loads(Path(out["saved_to"]).read_text())
    assert saved["train_flop_s"]["bf16"] > 0
    assert main(["validate", "--cache-dir", str(tmp_path), str(write_suite(tmp_path / "s.yaml", MINIMAL_SUITE))]) == 0
    assert "measured by `bench profile`" in capsys.readouterr().out


def test_eval_layout_and_bn_fusion_give_the_plain_flags_in_fp32(tmp_path: Path) -> None:
    """eval.channels_last / eval.fuse_bn: trained weights load in channels_last with their BatchNorms
    folded for every evaluation-side task, the manifest records it, and the per-sample flags equal
    those of the plain model (fp32)."""
    from bench.engine.store import Store
    from bench.engine.worker import WorkerContext, run

    text = MINIMAL_SUITE.replace("attacks: [fgsm]", "attacks: [pgd: {steps: 3}]") + "eval: {n_examples: 64, channels_last: true, fuse_bn: true}\n"
    plan = expand(load_suite(write_suite(tmp_path / "s.yaml", text)))
    store = Store(tmp_path / "cache")
    ctx = WorkerContext(plan, store, torch.device("cpu"))
    for task in plan.tasks:
        run(task, ctx)
    job = plan.eval_jobs[0]
    model = ctx.load_model(job.weights)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # more than one input channel
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert store.read_json("eval", job.key, "manifest.json")["fast_paths"] == {"precision": "fp32", "channels_last": True, "fuse_bn": True, "precision_ran": "fp32"}
    stored = store.read_npz("eval", job.key, "flags.npz")

    plain = WorkerContext(expand(load_suite(write_suite(tmp_path / "p.yaml", text.replace(", channels_last: true, fuse_bn: true", "")))), store, torch.device("cpu"))
    model = plain.load_model(job.weights)
    assert [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight.is_contiguous()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    _, x, y = plain.test_data()
    torch.manual_seed(int(job.key[:8], 16))  # the evaluation's own seed (engine._evaluate)
    entry = ATTACKS.get("pgd")
    flags = robust_flags(model, x, y, lambda m, xb, yb: entry.fn(m, xb, yb, THREAT, job.attack.params), THREAT.eps_float, 500, "plain")
    assert (flags.clean == stored["clean"]).all() and (flags.robust == stored["robust"]).all()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sanity_checks_run_their_attack_in_eval_precision_and_gradients_in_fp32(monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    from bench.evaluation import sanity

    seen = []
    real_grad = torch.autograd.grad

    def watched_pgd(model, x, *a, **kw):
        seen.append(("pgd", torch.is_autocast_enabled("cpu")))
        return x.clone()

    def watched_grad(*a, **kw):
        seen.append(("grad", torch.is_autocast_enabled("cpu")))
        return real_grad(*a, **kw)

    monkeypatch.setattr(sanity, "pgd", watched_pgd)
    monkeypatch.setattr(sanity.torch.autograd, "grad", watched_grad)
    x, y = batch(8)
    checks = sanity.sanity_checks(tiny(), (x * 255).to(torch.uint8), y, 8, precision)
    assert seen == [("grad", False), ("pgd", precision == "bf16")] and checks["n"] == 8


def test_analysis_attacks_run_in_eval_precision_and_its_forward_measurements_in_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.analysis.run as run_mod

    seen = []
    real_heatmap, real_filtered = run_mod.F.fourier_heatmap, run_mod.F.filtered_accuracy

    def watched_pgd(model, x, *a, **kw):
        seen.append(("pgd", torch.is_autocast_enabled("cpu")))
        return x.clone()

    def watched(name, fn):
        def call(*a, **kw):
            seen.append((name, torch.is_autocast_enabled("cpu")))
            return fn(*a, **kw)

        return call

    monkeypatch.setattr(run_mod, "pgd", watched_pgd)
    monkeypatch.setattr(run_mod.F, "fourier_heatmap", watched("heatmap", real_heatmap))
    monkeypatch.setattr(run_mod.F, "filtered_accuracy", watched("filtered", real_filtered))
    text = MINIMAL_SUITE + "analysis: {rows: [standard], n_images: 8, heatmap_images: 2, attack_steps: 2}\n"
    suite = load_suite(write_suite(tmp_path / "s.yaml", text))
    x, y = batch(8)
    run_mod.analyze(tiny(), x, y, suite.threat, suite.analysis, 0, None, "bf16")
    assert seen == [("pgd", True), ("heatmap", False), ("filtered", False), ("filtered", False)]


@pytest.mark.parametrize("name", [n for n in MODELS.names() if not n.startswith("wrn")])  # WRNs: the same blocks, 10x the size
def test_fuse_bn_folds_conv_batchnorm_pairs_and_keeps_the_function(name: str) -> None:
    shape = (1, 28, 28) if name.startswith("small_cnn") else (3, 32, 32)
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, shape=shape).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    x = torch.rand(4, *shape)
    fused = precision_mod.fuse_bn(model)
    count = lambda m: sum(isinstance(q, torch.nn.BatchNorm2d) for q in m.modules())  # noqa: E731
    assert count(fused) < count(model) or name == "small_cnn_trades"  # the TRADES SmallCNN has no BatchNorm
    if name.startswith("preact"):
        assert count(fused) > 0  # pre-activation BNs follow a ReLU or the input, not a convolution: kept
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)
    assert fused is not model and count(model) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in build_model(name, num_classes=10, shape=shape).modules())  # the original is untouched


@pytest.mark.parametrize("name", ["tiny_cnn", "small_cnn", "resnet18", "preact_resnet18"])
def test_folded_view_follows_the_live_model_and_keeps_its_function(name: str) -> None:
    """train.fuse_bn: after optimiser steps (new weights, new BN statistics) the view gives the live
    eval-mode model's logits and input gradients; a fold made before the steps would not."""
    shape = (1, 28, 28) if name == "small_cnn" else (3, 32, 32)
    torch.manual_seed(0)
    model = precision_mod.prepare(build_model(name, num_classes=10, shape=shape), channels_last=True)
    view = precision_mod.FoldedView.create(model)
    assert view is not None and view.pairs
    x, y = torch.rand(8, *shape), torch.randint(0, 10, (8,))
    with torch.no_grad():
        stale = view.current()(x).clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model.train()(x), y).backward()
        opt.step()

    def logits_and_grad(m: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        xg = x.clone().requires_grad_(True)
        out = m(xg)
        return out.detach(), torch.autograd.grad(F.cross_entropy(out, y), xg)[0]

    with frozen_eval(model):
        want, want_grad = logits_and_grad(model)
        got, got_grad = logits_and_grad(view.current())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the gradients as vectors: a ReLU whose input rounds to the other side of 0 in the folded convolution
    # moves a few elements by a few % of the largest (seen on resnet18 on one CPU: 48 of 24,576)
    assert (got_grad - want_grad).norm() <= 1e-2 * want_grad.norm()
    assert not torch.allclose(stale, want, atol=1e-3)  # the steps changed the function: re-folding is needed
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in view.module.modules()) or name.startswith("preact")
    assert all(p.grad is None for p in view.module.parameters() if not p.requires_grad)  # folded weights: no gradients
    assert precision_mod.FoldedView.create(build_model("small_cnn_trades", num_classes=10, shape=(1, 28, 28))) is None


@pytest.mark.parametrize("defence", sorted(e.name for e in DEFENCES.entries() if e.name != "standard"))
def test_fuse_bn_training_step_crafts_in_eval_mode_on_the_view_and_matches_the_plain_step(defence: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = precision_mod.FoldedView.current
    monkeypatch.setattr(precision_mod.FoldedView, "current", lambda self: calls.append(1) or real(self))
    loss, g = step_grads(tiny(), defence)
    model = tiny()
    folded = TrainContext(0, 0, 4, (2,), THREAT, 4, precision_mod.FoldedView.create(model))
    loss_f, g_f = step_grads(model, defence, ctx=folded)
    entry = DEFENCES.get(defence)
    in_eval = getattr(params_mod.build(entry.params, {}, defence), "attack_bn", "eval") == "eval"
    assert bool(calls) == in_eval, "crafted in eval mode on the folded view, in train mode (AWP's default) on the model"
    assert loss_f == pytest.approx(loss, rel=1e-3)
    assert F.cosine_similarity(g_f, g, dim=0) > 0.98  # float rounding can flip a sign step of PGD
    # a model that is not the view's source (AWP's proxy, another model) is crafted on as it is
    calls.clear()
    step_grads(tiny(), defence, ctx=folded)
    assert not calls


def test_sharded_bf16_evaluation_runs_in_bf16_and_pools_each_shard_s_parity_slice(tmp_path: Path) -> None:
    from bench.engine.store import Store

    text = MINIMAL_SUITE.replace("attacks: [fgsm]", "attacks: [pgd: {steps: 2, shards: 2}]") + "eval: {n_examples: 40, batch_size: 8, precision: bf16}\n"
    suite = write_suite(tmp_path / "s.yaml", text)
    cache = tmp_path / "cache"
    assert main(["run", str(suite), "--device", "cpu", "--quiet", "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r")]) == 0
    plan, store = expand(load_suite(suite)), Store(cache)
    job = plan.eval_jobs[0]
    slices = [store.read_json("shard", k, "metrics.json")["parity"] for k in job.shards]
    assert [s["n"] for s in slices] == [16, 16]  # a random slice of each shard's points (of 24 and 16), in fp32
    assert all(store.read_json("shard", k, "manifest.json")["fast_paths"]["precision"] == "bf16" for k in job.shards)
    merged = store.read_json("eval", job.key, "metrics.json")["parity"]
    assert merged["n"] == 32 and merged["flips"] == sum(s["flips"] for s in slices)
    assert merged["robust_acc_fp32"] == pytest.approx(sum(s["robust_acc_fp32"] for s in slices) / 2)
