"""Weight averaging (WA), an axis of the run rather than a defence (methods.md section 3.6).

* ``swa``: the FR code's SWA, the equal-weight mean of end-of-epoch weights from ``start``
  (default: the first LR milestone) every ``every`` epochs. Only parameters are averaged; BatchNorm
  statistics are recomputed after each update by one pass over the clean (augmented) training data
  in train mode, with a cumulative average (FR ``bn_update``).
* ``ema``: exponential moving average of parameters and buffers after every optimiser step from
  ``start``, with decay ``decay`` (not a paper setting: FastAT-Bench style, clearly labelled).

An averager keeps a copy of the weights and never changes the training trajectory: its BN pass uses
its own random generator and restores the global RNG state.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench.data.loader import batches
from bench.suite.specs import WASpec


def resolve_start(spec: WASpec, milestones: tuple[int, ...], epochs: int) -> int:
    if spec.start == "first_milestone":
        return milestones[0] if milestones else epochs
    return int(spec.start)


class Averager:
    def __init__(self, spec: WASpec, model: nn.Module, milestones: tuple[int, ...], epochs: int, seed: int) -> None:
        self.spec = spec
        self.start = resolve_start(spec, milestones, epochs)
        self.model = copy.deepcopy(model)
        self.n = 0
        self.generator = torch.Generator().manual_seed(seed + 7919)

    def after_step(self, model: nn.Module, epoch: int) -> None:
        if self.spec.kind == "ema" and epoch >= self.start:
            self._ema(model)

    def after_epoch(self, model: nn.Module, epoch: int) -> bool:
        """Update at the end of ``epoch`` if the policy says so; True when the weights changed."""
        if epoch < self.start:
            return False
        if self.spec.kind == "swa":
            if (epoch - self.start) % self.spec.every:
                return False
            self._swa(model)
        return self.n > 0

    @torch.no_grad()
    def _swa(self, model: nn.Module) -> None:
        self.n += 1
        for avg, cur in zip(self.model.parameters(), model.parameters()):
            avg.add_(cur.detach() - avg, alpha=1.0 / self.n)  # n = 1 copies the weights

    @torch.no_grad()
    def _ema(self, model: nn.Module) -> None:
        decay = 0.0 if self.n == 0 else self.spec.decay
        self.n += 1
        for avg, cur in zip(self.model.state_dict().values(), model.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.mul_(decay).add_(cur.detach(), alpha=1 - decay)
            else:
                avg.copy_(cur)

    @torch.no_grad()
    def recompute_bn(self, train_x: torch.Tensor, train_y: torch.Tensor, batch_size: int, crop_padding: int, flip: bool) -> None:
        """BN statistics from one clean pass over the training data in train mode (FR ``bn_update``).

        Each batch of size b after n samples gets momentum b / (n + b), so the running mean is the
        exact sample-weighted mean and the running variance the sample-weighted mean of the batch
        variances.
        """
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
        rng = torch.get_rng_state()
        was_training = self.model.training
        self.model.train()
        seen = 0
        try:
            stream = batches(train_x, train_y, batch_size, g=self.generator, crop_padding=crop_padding, flip=flip)
            for x, _ in stream:
                for m in bns:
                    m.momentum = len(x) / (seen + len(x))
                self.model(x)
                seen += len(x)
        finally:
            torch.set_rng_state(rng)
            self.model.train(was_training)
            for m, momentum in zip(bns, momenta):
                m.momentum = momentum
