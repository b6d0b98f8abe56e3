"""Fast paths in one place: bf16 autocast, channels_last layout, ``torch.compile``.

* ``autocast(device, precision)``: bf16 autocast around a block (``fp32``: nothing). Used around the
  defence's whole loss, attack steps included (``train.precision``), and around an attack at
  evaluation (``eval.precision``). Losses reduce in fp32 under autocast; final predictions at
  evaluation are recomputed in fp32 outside it.
* ``to_layout(t, channels_last)``: 4-D tensors (and a model's parameters) in channels_last memory
  format; element-wise attack steps keep the format of their input.
* ``fuse_bn(model)``: a copy with the BatchNorms after convolutions folded into them (``eval.fuse_bn``).
* ``prepare(model, channels_last, compile)``: the layout in place, and ``nn.Module.compile`` (in place:
  the same object, its ``state_dict`` unchanged, so defences that copy or perturb the model work).
  :data:`COMPILE_BACKEND` is ``inductor`` (tests use ``eager``: same graph capture, no C++ build).
"""

from __future__ import annotations

import contextlib
import copy
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


def fuse_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm that directly follows a convolution folded into it.

    The model is traced with ``torch.fx``; each ``Conv2d -> BatchNorm2d`` pair whose convolution
    output feeds only the BatchNorm becomes one convolution (``torch.nn.utils.fusion``: weights and
    bias scaled by the running statistics). The copy computes the same function up to float
    rounding, with no BatchNorm forward or backward left to run (about an eighth of an attack
    step's time on small CNNs). A model that cannot be traced is returned as an unfused copy.
    """
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow cannot be traced: evaluate unfused
        return model
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        conv = node.args[0] if node.op == "call_module" and node.args else None
        if not (isinstance(modules.get(node.target), nn.BatchNorm2d) and isinstance(conv, torch.fx.Node)):
            continue
        bn = modules[node.target]
        if conv.op != "call_module" or not isinstance(modules[conv.target], nn.Conv2d) or len(conv.users) > 1 or bn.running_mean is None:
            continue
        fused = fuse_conv_bn_eval(modules[conv.target], bn)
        parent, _, name = conv.target.rpartition(".")
        setattr(traced.get_submodule(parent), name, fused)
        modules[conv.target] = fused
        node.replace_all_uses_with(conv)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced


def prepare(model: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Put ``model`` in the asked layout and compile its forward, both in place; returns ``model``."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(backend=COMPILE_BACKEND, dynamic=False)
    return model
