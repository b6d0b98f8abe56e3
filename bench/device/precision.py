"""Fast paths in one place: low-precision autocast, channels_last layout, ``torch.compile``.

* Precisions (``train.precision``, ``eval.precision``): ``fp32``; ``bf16`` and ``fp16`` autocast;
  ``tf32`` (CUDA: fp32 tensors with TF32 matmuls and convolutions, keyed since it changes numerics);
  ``auto``, resolved where a task runs into the path it actually runs (``bench/device/native.py``).
* ``autocast(device, path)``: the path's context around a block (``fp32``: nothing). Used around the
  defence's whole loss, attack steps included (``train.precision``), and around an attack at
  evaluation (``eval.precision``). Losses reduce in fp32 under autocast; final predictions at
  evaluation are recomputed in fp32 outside it.
* ``configure(device)``: once per process: ``cudnn.benchmark`` (fixed input shapes) and IEEE fp32
  matmuls and convolutions on CUDA (PyTorch's default lets cuDNN convolutions use TF32; here TF32 is
  only ever the explicit ``tf32`` path).
* fp16's narrow exponent: training scales the loss (``torch.amp.GradScaler``, ``bench/training/train.py``);
  attacks take input gradients through :class:`InputGradScaling` (``attack_model``), which scales
  each example's logit gradient to about 1 before it enters the fp16 backward and divides it out at
  the input, in fp32, so small gradients of confident points do not underflow to zero; a weight
  direction (AWP) takes its gradients through ``direction_logits``, scaled the same way.
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
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

Precision = Literal["fp32", "bf16", "fp16", "tf32", "auto"]
PRECISION_CHOICES: tuple[str, ...] = ("fp32", "bf16", "fp16", "tf32", "auto")  # what a suite may say
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")  # what `bench profile` times on a CPU by default
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_BACKEND = "inductor"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context of a resolved precision path on ``device``: bf16/fp16 autocast, TF32 on CUDA, or
    nothing (``fp32``, and ``tf32`` off CUDA)."""
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=DTYPES[precision])
    return tf32_scope(device, precision)


def tf32_scope(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """TF32 matmuls and convolutions for the block when ``precision`` is tf32 on CUDA (a global flag read
    at every kernel launch, so the training step's backward runs in it too); otherwise nothing."""
    return _tf32() if precision == "tf32" and device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def configure(device: torch.device) -> None:
    """Per-process CUDA settings: cuDNN autotuning for fixed shapes, IEEE fp32 unless a block asks for TF32."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"


class _ScaleLogitGrad(torch.autograd.Function):
    """Identity (to fp32) forward; backward scales the gradient by powers of two (exact) so that each
    example's largest entry (or, ``per_example=False``, the batch's) lies in [1, 2), recording the
    factors for :class:`_UnscaleInputGrad`."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, factors: list, per_example: bool) -> torch.Tensor:
        ctx.factors, ctx.dtype, ctx.per_example = factors, logits.dtype, per_example
        return logits.float()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        peak = grad.flatten(1).abs().amax(1)
        if not ctx.per_example:
            peak = peak.amax().expand_as(peak)
        scale = torch.where(peak > 0, torch.exp2(-torch.floor(torch.log2(peak.clamp_min(1e-38)))), torch.ones_like(peak))
        ctx.factors.append(scale)
        return (grad * _per_sample(scale, grad)).to(ctx.dtype), None, None


class _UnscaleInputGrad(torch.autograd.Function):
    """Identity forward; backward divides the input gradient (fp32) by the factors the logits' backward used."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factors: list) -> torch.Tensor:
        ctx.factors = factors
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.factors:
            return grad, None
        return grad / _per_sample(ctx.factors.pop(), grad), None


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class InputGradScaling(nn.Module):
    """``model`` for attacks under fp16: the same outputs (as fp32), input gradients without underflow.

    Each example's gradient at the logits is scaled by a power of two (exact) to a largest entry in
    [1, 2) before it flows back through the fp16 network, and divided out at the input in fp32: input
    gradients equal fp32's up to fp16 rounding, where unscaled ones of confident points (softmax
    gradients below fp16's 6e-8) round to exactly zero and silently weaken every gradient attack.
    Per-example factors are exact only when examples do not interact, so with any module in train
    mode (BatchNorm batch statistics) one factor, from the batch's largest entry, is used for all.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return self.model(x).float()
        factors: list = []
        per_example = not any(m.training for m in self.model.modules())
        return _ScaleLogitGrad.apply(self.model(_UnscaleInputGrad.apply(x, factors)), factors, per_example)


def direction_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (as fp32) for a loss whose parameter gradients are used only as a direction (AWP's weight
    perturbation is normalised per tensor): from fp16 logits, their gradient enters the fp16 backward scaled by
    one power of two (exact) to a largest entry in [1, 2), so the parameter gradients of confident points
    do not underflow to zero; the scale is not divided out (a direction does not change). Other dtypes: as they are."""
    return _ScaleLogitGrad.apply(logits, [], False) if logits.dtype == torch.float16 else logits


def attack_model(model: nn.Module, precision: str) -> nn.Module:
    """What attacks take gradients through under ``precision``: ``model``, or under fp16 its
    :class:`InputGradScaling` view."""
    return InputGradScaling(model) if precision == "fp16" else model


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
