"""Randomised and probability-output models: detected in every evaluation, evaluated honestly, flagged.

Detection (:class:`Verdicts`, used by ``bench.evaluation.evaluate.robust_flags``): the first clean batch of each
evaluation runs through the model twice, the second pass under a forked RNG so that the attack's
random stream is the one an evaluation without the check has. That is the whole cost for a model
that is neither: one extra forward pass of one batch, and its flags are bit for bit those of one pass.

* **randomised**: the two outputs differ (normalised per row, L2 distance above ``RANDOM_TOL``:
  AutoAttack's ``checks.check_randomized``; float noise between identical passes is far below it).
* **probabilities**: values in [0, 1] and rows summing to 1 within ``PROB_TOL`` (AutoAttack's
  ``checks.check_range_output``). Cross-entropy on probabilities saturates and its gradients vanish,
  so gradient attacks are weakened; the model is evaluated as it is, and named in the flags.

A randomised model's per-sample verdict is not one draw but the majority of ``DRAWS`` forward
passes: correct when more than half of them classify the point correctly, on the clean input and on
the attack's output alike. The clean draws are seeded from the content of the batch (under a forked
RNG), so the evaluations of the same weights, which see the same batches, agree on the clean
verdicts (the Clean column, every attack's clean-correct set and the worst case stay consistent), and a
re-run or a resumed run gives the same flags. The draws on ``x_adv`` follow the evaluation's own
seeded stream (saved with its resume state). Reproducibility assumes the model draws from torch's
global RNG. Where batches differ between evaluations (an attack on a smaller ``n_examples`` whose
last batch is partial), a few clean verdicts can differ: aggregation then takes the largest
evaluation's and says on how many examples they differ (:func:`model_flags`) instead of stopping.

Gradient attacks against a randomised model need expectation over transformation (``eot: N`` on
``pgd``, ``fgsm``, ``cw``; AutoAttack ``version: rand``, EOT 20); without it robust accuracy is
likely overestimated, and the run is flagged. An attack declares its EoT passes through its
registry ``eot`` capability.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bench.attacks.autoattack import RAND_EOT
from bench.registry import ATTACKS

DRAWS = 15  # forward passes behind each verdict of a randomised model (odd: a majority always exists)
RANDOM_TOL = 1e-4  # AutoAttack check_randomized: max L2 distance between row-normalised outputs
PROB_TOL = 1e-5  # AutoAttack check_range_output: values within [-tol, 1 + tol], row sums within tol of 1
GRADIENT_FAMILIES = ("fgsm", "iterative", "ensemble")  # attacks that follow the model's gradients

MESSAGES = {  # one flag each: no "; " inside (the leaderboard splits the flags text on it)
    "flag_randomised": "randomised model: outputs differ between two forward passes, every verdict (clean and "
    "attacked) is the majority of {draws} seeded draws{eot_text}",
    "flag_no_eot": "randomised model attacked without EoT by {no_eot}: robust accuracy is likely overestimated "
    "(use eot: N, or autoattack version: rand)",
    "flag_clean_draws_differ": "the randomised model's clean verdicts differ between its evaluations on "
    "{flag_clean_draws_differ} example(s) (draws depend on the batch), Clean is the largest evaluation's",
    "flag_probabilities": "model outputs probabilities (rows sum to 1), not logits: gradient attacks on CE are "
    "weakened (vanishing gradients), evaluate the logits",
}


def _rows_normalised(out: torch.Tensor) -> torch.Tensor:
    flat = out.detach().float().flatten(1)
    return flat / (flat.norm(dim=1, keepdim=True) + 1e-10)


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two outputs of the same input differ beyond float noise (AutoAttack's criterion)."""
    if a.shape != b.shape or a.numel() == 0:
        return a.shape != b.shape
    return float((_rows_normalised(a) - _rows_normalised(b)).norm(dim=1).max()) > RANDOM_TOL


def is_probabilities(out: torch.Tensor) -> bool:
    """Whether every row is a probability vector: values in [0, 1], summing to 1 (within ``PROB_TOL``)."""
    if out.dim() != 2 or out.numel() == 0:
        return False
    out = out.detach().float()
    in_range = float(out.max()) < 1 + PROB_TOL and float(out.min()) > -PROB_TOL
    return in_range and bool(((out.sum(1) - 1).abs() < PROB_TOL).all())


def content_seed(x: torch.Tensor) -> int:
    """A seed from the bytes of ``x`` (the same batch gives the same seed in every evaluation)."""
    return int.from_bytes(hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).digest()[:8], "little") >> 1


@contextlib.contextmanager
def forked(device: torch.device, seed: int | None = None) -> Iterator[None]:
    """The block draws from a copy of the RNG of the CPU and of ``device`` (seeded with ``seed`` if given);
    both are restored afterwards, so the caller's random stream is untouched."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.random.default_generator.manual_seed(seed)
            for index in devices:
                torch.cuda.default_generators[index].manual_seed(seed)
        yield


class Verdicts:
    """Per-sample correctness for one evaluation, the model checked on the first batch it sees.

    ``clean`` and ``robust`` return bool per sample: one forward pass for a deterministic model (as
    before the check existed), the majority of ``DRAWS`` passes for a randomised one. ``record()`` is
    the check's result for ``metrics.json`` (None when no batch was seen).
    """

    def __init__(self) -> None:
        self.randomised: bool | None = None
        self.probabilities = False

    def _check(self, model: nn.Module, xb: torch.Tensor, first: torch.Tensor) -> None:
        with forked(xb.device):
            second = model(xb)
        self.randomised = differs(first, second)
        self.probabilities = is_probabilities(first)

    def check(self, model: nn.Module, xb: torch.Tensor) -> None:
        """Check the model on ``xb`` without using its verdicts (a resumed evaluation past its first batch):
        both passes under a forked RNG, so the restored random stream is untouched."""
        with torch.no_grad(), forked(xb.device):
            self._check(model, xb, model(xb))

    def clean(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.randomised is None:
                first = model(xb)  # the pass an evaluation without the check makes
                self._check(model, xb, first)
                if not self.randomised:
                    return first.argmax(1) == yb
            if not self.randomised:
                return model(xb).argmax(1) == yb
            with forked(xb.device, content_seed(xb)):
                return self._majority(model, xb, yb)

    def robust(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The final decision on the attack's output (fp32, outside autocast; the caller's stream)."""
        with torch.no_grad():
            return self._majority(model, x, y) if self.randomised else model(x).argmax(1) == y

    @staticmethod
    def _majority(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        votes = torch.zeros(len(y), dtype=torch.int64, device=y.device)
        for _ in range(DRAWS):
            votes += model(x).argmax(1) == y
        return 2 * votes > DRAWS

    def record(self) -> dict[str, Any] | None:
        if self.randomised is None:
            return None
        return {"randomised": self.randomised, "probabilities": self.probabilities, **({"draws": DRAWS} if self.randomised else {})}


def merged(records: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The check of an evaluation made of shards: randomised or probabilities if any shard saw it."""
    seen = [r for r in records if r]
    if not seen:
        return None
    randomised = any(r["randomised"] for r in seen)
    draws = {"draws": max(r.get("draws", DRAWS) for r in seen)} if randomised else {}
    return {"randomised": randomised, "probabilities": any(r["probabilities"] for r in seen), **draws}


def eot_passes(attack_name: str, params: Any) -> int:
    """The gradient passes an attack averages per step (its registry ``eot`` capability; 1 without)."""
    declared = ATTACKS.get(attack_name).eot
    return int(declared(params)) if declared else 1


def model_flags(evaluations: list[tuple[str, str, Any, dict[str, Any] | None]], clean_differ: int = 0) -> dict[str, Any]:
    """Flag columns of one run from its evaluations' checks: (column, attack name, params, record) each.

    ``flags`` holds the raised messages joined by "; ". Evaluations without a record (made before
    the check existed) count as unchecked: no flag columns when none has one.
    """
    records = [r for *_, r in evaluations if r]
    if not records:
        return {"flags": ""}
    randomised = any(r["randomised"] for r in records)
    out: dict[str, Any] = {
        "flag_randomised": randomised,
        "flag_probabilities": any(r["probabilities"] for r in records),
        "flag_no_eot": False,
    }
    if randomised:
        eot = {col: eot_passes(name, p) for col, name, p, _ in evaluations if ATTACKS.get(name).family in GRADIENT_FAMILIES}
        with_eot = [f"{col} ({n} passes)" for col, n in eot.items() if n > 1]
        without = [col for col, n in eot.items() if n == 1]
        out["flag_no_eot"] = bool(without)
        out["flag_clean_draws_differ"] = clean_differ
        fields = {
            "draws": max(r.get("draws", DRAWS) for r in records if r["randomised"]),
            "eot_text": f", gradients averaged over EoT by {', '.join(with_eot)}" if with_eot else "",
            "no_eot": ", ".join(without),
            **out,
        }
        out["flags"] = "; ".join(MESSAGES[k].format(**fields) for k in MESSAGES if fields.get(k))
    else:
        out["flags"] = MESSAGES["flag_probabilities"] if out["flag_probabilities"] else ""
    return out


def header_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The leaderboard's note on how randomised models were evaluated (none when no row is one)."""
    if not any(r.get("flag_randomised") is True for r in rows):
        return []
    note = (
        f"- Randomised models (flagged below): each per-sample verdict, clean and under attack, is the majority of "
        f"{DRAWS} seeded forward passes; columns marked ·EoTN average each gradient over N passes "
        f"(AutoAttack-rand: EOT {RAND_EOT})."
    )
    return [note]
