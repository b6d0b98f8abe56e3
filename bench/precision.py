"""Fast paths in one place: bf16 autocast, channels_last layout, ``torch.compile``.

* ``autocast(device, precision)``: bf16 autocast around a block (``fp32``: nothing). Used around the
  defence's whole loss, attack steps included (``train.precision``), and around an attack at
  evaluation (``eval.precision``). Losses reduce in fp32 under autocast; final predictions at
  evaluation are recomputed in fp32 outside it.
* ``to_layout(t, channels_last)``: 4-D tensors (and a model's parameters) in channels_last memory
  format; element-wise attack steps keep the format of their input.
* ``fuse_bn(model)``: a copy with the BatchNorms after convolutions folded into them (``eval.fuse_bn``,
  and ``train.fuse_bn``'s validation attacks); ``FoldedView``: the same fold kept in step with a
  training model, for crafting its adversaries in eval mode (``train.fuse_bn``).
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
    model = copy.deepcopy(model).eval()
    folded = _fold(model)
    return model if folded is None else folded[0]


def _fold(model: nn.Module) -> tuple[nn.Module, list[tuple[str, str]]] | None:
    """``model`` (an eval-mode copy: its modules are reused) traced with its Conv2d -> BatchNorm2d pairs
    folded, and the (conv, BatchNorm) names of the folded pairs; None when it cannot be traced."""
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow cannot be traced: run unfused
        return None
    modules = dict(traced.named_modules())
    pairs = []
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
        pairs.append((conv.target, node.target))
        node.replace_all_uses_with(conv)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced, pairs


class FoldedView:
    """A training model's eval-mode function with its BatchNorms folded, for crafting adversaries (``train.fuse_bn``).

    Built once per training run; ``current()`` re-folds each pair from the live model's convolution
    weights and BatchNorm statistics (which every step changes) and returns the folded module. Its
    other parameters and buffers *are* the live model's (shared tensors), so it computes what the
    live model computes in eval mode, up to float rounding, with no BatchNorm forward or backward.
    A model with nothing to fold (or that cannot be traced) gives no view: ``create`` returns None.
    """

    def __init__(self, source: nn.Module, module: nn.Module, pairs: list[tuple[str, str]]) -> None:
        self.source, self.module, self.pairs = source, module, pairs

    @classmethod
    def create(cls, model: nn.Module) -> FoldedView | None:
        folded = _fold(copy.deepcopy(model).eval())
        if folded is None or not folded[1]:
            return None
        module, pairs = folded
        convs = {conv for conv, _ in pairs}
        for name, param in module.named_parameters():
            if name.rpartition(".")[0] in convs:
                param.requires_grad_(False)  # re-folded under no_grad at every current()
            else:
                _share(module, name, model.get_parameter(name))
        for name, _ in module.named_buffers():
            _share(module, name, model.get_buffer(name))
        return cls(model, module, pairs)

    def current(self) -> nn.Module:
        """The folded module with the live weights and running statistics."""
        from torch.nn.utils.fusion import fuse_conv_bn_weights

        with torch.no_grad():
            for conv_name, bn_name in self.pairs:
                conv, bn = self.source.get_submodule(conv_name), self.source.get_submodule(bn_name)
                w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
                target = self.module.get_submodule(conv_name)
                target.weight.copy_(w)
                target.bias.copy_(b)
        return self.module


def _share(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Point ``module``'s parameter or buffer ``name`` at ``tensor`` (the live model's own)."""
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent), leaf, tensor)


def prepare(model: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Put ``model`` in the asked layout and compile its forward, both in place; returns ``model``."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(backend=COMPILE_BACKEND, dynamic=False)
    return model
