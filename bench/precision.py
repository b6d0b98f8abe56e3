"""Fast paths in one place: bf16 autocast, channels_last layout, ``torch.compile``.

* ``autocast(device, precision)``: bf16 autocast around a block (``fp32``: nothing). Used around the
  defence's whole loss, attack steps included (``train.precision``), and around an attack at
  evaluation (``eval.precision``). Losses reduce in fp32 under autocast; final predictions at
  evaluation are recomputed in fp32 outside it.
* ``to_layout(t, channels_last)``: 4-D tensors (and a model's parameters) in channels_last memory
  format; element-wise attack steps keep the format of their input.
* ``prepare(model, channels_last, compile)``: the layout in place, and ``nn.Module.compile`` (in place:
  the same object, its ``state_dict`` unchanged, so defences that copy or perturb the model work).
  :data:`COMPILE_BACKEND` is ``inductor`` (tests use ``eager``: same graph capture, no C++ build).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
from torch import nn

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
COMPILE_BACKEND = "inductor"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"``; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def to_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` in channels_last memory format when asked and 4-D; otherwise ``t`` itself."""
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t


def prepare(model: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Put ``model`` in the asked layout and compile its forward, both in place; returns ``model``."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(backend=COMPILE_BACKEND, dynamic=False)
    return model
