"""Module-mode contexts shared by training, attacks and evaluation (they restore every module's mode).

* ``bn_mode(model, "eval" | "train")``: the mode in which a defence crafts its training adversary.
* ``frozen_eval(model)``: eval mode and ``requires_grad=False`` on every parameter, so attacks take
  input-only gradients; used by evaluation, sanity checks, analyses and the AutoAttack adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from torch import nn

BNMode = Literal["eval", "train"]


@contextlib.contextmanager
def bn_mode(model: nn.Module, mode: BNMode) -> Iterator[nn.Module]:
    """Run the block with the model in ``mode`` ("eval" or "train"), then restore every module's mode."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        yield model
    finally:
        for m, training in saved:
            m.training = training


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter; both restored afterwards."""
    grads = [(p, p.requires_grad) for p in model.parameters()]
    with bn_mode(model, "eval"):
        for p, _ in grads:
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in grads:
                p.requires_grad_(flag)
