"""Fourier-domain analyses (methods.md section 6).

Conventions (methods.md 6.0): X_c = FFT2(x_c) per image and channel over the last two axes,
centred with ``fftshift`` so that DC sits at (H//2, W//2) ((14, 14) at 28x28, (16, 16) at 32x32),
and radius rho(u, v) = distance from that centre. Inputs are N x C x H x W floats in [0, 1]; any
H, W (odd too) and any channel count. Everything runs on the inputs' device.

Matplotlib is imported inside the plotting functions only, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from bench.core.modes import frozen_eval

Keep = Literal["low", "high"]
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

_DIMS = (-2, -1)


def _centred_fft(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(x, dim=_DIMS), dim=_DIMS)


# ---------------------------------------------------------------- spectra (6.0, 6.1)


def centred_amplitude(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) display spectrum mean_c log(1 + |fftshift(FFT2(x_c))|) (methods.md 6.0/6.1)."""
    return torch.log1p(_centred_fft(x).abs()).mean(1)


def perturbation_spectrum(delta: torch.Tensor) -> torch.Tensor:
    """(H, W) E(u, v) = mean over images and channels of |fftshift(FFT2(delta_c))| (methods.md 6.1)."""
    return _centred_fft(delta).abs().mean((0, 1))


def radius_grid(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W) distance of each centred-spectrum bin from the DC bin (h//2, w//2) (methods.md 6.0)."""
    u = torch.arange(h, device=device, dtype=torch.float32) - h // 2
    v = torch.arange(w, device=device, dtype=torch.float32) - w // 2
    return torch.sqrt(u[:, None] ** 2 + v[None, :] ** 2)


def radial_profile(E: torch.Tensor) -> torch.Tensor:
    """1-D mean of a centred (H, W) map in integer-radius bins floor(rho) (methods.md 6.1).

    Entry k averages the bins with k <= rho < k + 1; an empty bin (none at 28x28 or 32x32) is NaN.
    """
    bins = radius_grid(*E.shape, device=E.device).floor().long().flatten()
    n = int(bins.max()) + 1
    values = E.flatten().to(torch.float64)
    sums = torch.zeros(n, dtype=torch.float64, device=E.device).index_add_(0, bins, values)
    counts = torch.zeros(n, dtype=torch.float64, device=E.device).index_add_(0, bins, torch.ones_like(values))
    return (sums / counts).to(E.dtype)  # 0/0 = NaN for empty bins


def energy_fraction(E: torch.Tensor, r: float) -> float:
    """eta_r = sum_{rho < r} E^2 / sum E^2 of a centred (H, W) spectrum (methods.md 6.4, ours)."""
    e2 = E.to(torch.float64) ** 2
    return float(e2[radius_grid(*E.shape, device=E.device) < r].sum() / e2.sum())


# ---------------------------------------------------------------- filters (6.2)


def square_mask(h: int, w: int, b: float, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W) bool FR-paper square of bandwidth b on the centred spectrum (methods.md 6.2).

    M_b[i, j] = 1 iff H/2 - b/2 <= i < H/2 + b/2 and W/2 - b/2 <= j < W/2 + b/2, with H/2 read as
    the DC index H//2 (identical for even H; for odd H it keeps the band centred on DC). For even b
    the band holds frequency -b/2 but not +b/2, so it has b x b ones (b <= H, W).
    """

    def band(n: int) -> torch.Tensor:
        k = 2 * (torch.arange(n, device=device) - n // 2)  # twice the offset from DC
        return (k >= -b) & (k < b)

    return band(h)[:, None] & band(w)[None, :]


def circle_mask(h: int, w: int, r: float, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W) bool HFC radial mask rho < r on the centred spectrum (methods.md 6.2)."""
    return radius_grid(h, w, device=device) < r


def filter_images(x: torch.Tensor, mask: torch.Tensor, keep: Keep = "low", clamp: bool = False) -> torch.Tensor:
    """Re(IFFT2(ifftshift(M * fftshift(FFT2(x_c))))) per image and channel (methods.md 6.2).

    ``keep="low"`` applies M, ``"high"`` applies 1 - M. No clamp to [0, 1] unless ``clamp``
    (UNCONFIRMED in the paper; default off).
    """
    if keep not in ("low", "high"):
        raise ValueError(f"keep must be 'low' or 'high', got {keep!r}")
    m = mask.to(device=x.device, dtype=x.dtype)
    if keep == "high":
        m = 1 - m
    spec = torch.fft.ifftshift(_centred_fft(x) * m, dim=_DIMS)
    out = torch.fft.ifft2(spec, dim=_DIMS).real.to(x.dtype)
    return out.clamp(0.0, 1.0) if clamp else out


class FilteredModel(nn.Module):
    """model o filter: the filter inside the forward pass (the adaptive 'filter-in-the-loop' attack)."""

    def __init__(self, model: nn.Module, mask: torch.Tensor, keep: Keep = "low", clamp: bool = False):
        super().__init__()
        self.model, self.keep, self.clamp = model, keep, clamp
        self.register_buffer("mask", mask.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(filter_images(x, self.mask, self.keep, self.clamp))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def _attack_batched(attack: AttackFn, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    parts = [attack(model, x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).detach()


def filtered_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: Mapping[str, torch.Tensor],
    attack: AttackFn | None = None,
    in_loop: bool = False,
    keep: Keep = "low",
    clamp: bool = False,
    batch_size: int = 256,
    x_adv: torch.Tensor | None = None,
) -> dict[str, tuple[float, float | None]]:
    """Accuracy on filtered inputs for each mask: {name: (clean_acc, adv_acc or None)} (methods.md 6.2).

    Clean: classify filter(x). Adversarial (only when ``attack(model, x, y) -> x_adv`` is given):
    by default x_adv is crafted once against the UNFILTERED model and then filtered and classified
    (the FR Table 1 reading); with ``in_loop=True`` it is crafted per mask against model o filter
    (adaptive). ``keep="high"`` gives the high-pass variant (1 - M). ``x_adv``: adversarial examples
    already crafted by ``attack`` against the unfiltered model (shared with the perturbation spectra
    and between the low- and high-pass tables); ignored with ``in_loop``.
    """
    results: dict[str, tuple[float, float | None]] = {}
    with frozen_eval(model):
        if attack is not None and not in_loop and x_adv is None:
            x_adv = _attack_batched(attack, model, x, y, batch_size)
        for name, mask in masks.items():
            wrapped = FilteredModel(model, mask.to(x.device), keep, clamp).eval()
            clean = _accuracy(wrapped, x, y, batch_size)
            adv = None
            if attack is not None:
                xa = _attack_batched(attack, wrapped, x, y, batch_size) if in_loop else x_adv
                adv = _accuracy(wrapped, xa, y, batch_size)
            results[name] = (clean, adv)
    return results


# ---------------------------------------------------------------- Fourier heat map (6.3)


def fourier_basis(h: int, w: int, i: int, j: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W) Fourier basis image U_ij with ||U_ij||_2 = 1 (Yin et al. 2019; methods.md 6.3).

    One-hot half spectrum of shape (H, W//2+1) at (i, j), i in [0, H), j in [0, W//2], through
    ``irfftn(s=(H, W))``: a real cosine whose spectrum is supported on +-(i, j) (mod size).
    """
    return _bases(h, w, [(i, j)], device)[0]


def _bases(h: int, w: int, index: list[tuple[int, int]], device=None) -> torch.Tensor:
    """(K, H, W) stack of ``fourier_basis`` images, in one batched inverse FFT."""
    for i, j in index:
        if not (0 <= i < h and 0 <= j <= w // 2):
            raise ValueError(f"basis index ({i}, {j}) outside [0, {h}) x [0, {w // 2}]")
    spectra = torch.zeros(len(index), h, w // 2 + 1, dtype=torch.complex64, device=device)
    rows, cols = torch.tensor(index, device=device).T
    spectra[torch.arange(len(index), device=device), rows, cols] = 1.0
    u = torch.fft.irfftn(spectra, s=(h, w), dim=_DIMS)
    return u / u.flatten(1).norm(dim=1)[:, None, None]


def fourier_heatmap(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    v: float,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(H, W) centred error-rate map of ``model`` under Fourier-basis noise (methods.md 6.3).

    For every half-plane basis (i, j) in [0, H) x [0, W//2]: x~_c = clip01(x_c + r_c v U_ij) with an
    independent sign r_c in {-1, +1} per image and channel; value = 1 - top-1 accuracy. The other
    half is filled by point symmetry and the map is fftshift-ed (low frequency at the centre, DC at
    (H//2, W//2)). Cost: H (W//2+1) N forwards; when N < batch_size several bases' perturbed
    copies share one forward batch. Signs are drawn from ``generator`` (on its device) if given.
    v: L2 norm of the perturbation (4.0 for CIFAR-10 32x32, 3.5 for 28x28, methods.md 6.3/10).
    """
    n, c, h, w = x.shape
    bases = [(i, j) for i in range(h) for j in range(w // 2 + 1)]
    per_group = max(1, batch_size // n)
    errors = torch.zeros(len(bases), dtype=torch.float64)  # row-major over the (H, W//2+1) half-plane
    all_u = _bases(h, w, bases, device=x.device).to(x.dtype)  # H (W//2+1) H W floats: 34 MB at 64x64
    sign_device = generator.device if generator is not None else x.device
    with frozen_eval(model), torch.no_grad():
        for g in range(0, len(bases), per_group):
            u = all_u[g : g + per_group]
            k = len(u)
            signs = torch.randint(0, 2, (k, n, c, 1, 1), generator=generator, device=sign_device).to(x.device, x.dtype)
            xt = (x[None] + (2 * signs - 1) * v * u[:, None, None]).clamp_(0.0, 1.0).reshape(-1, c, h, w)
            yt = y.repeat(k)
            chunks = range(0, len(xt), batch_size)
            correct = torch.cat([model(xt[k : k + batch_size]).argmax(1) == yt[k : k + batch_size] for k in chunks])
            errors[g : g + k] = 1.0 - correct.view(k, n).double().mean(1).cpu()
    errors = errors.view(h, w // 2 + 1)
    full = torch.zeros(h, w, dtype=torch.float64)
    full[:, : w // 2 + 1] = errors
    cols = torch.arange(w // 2 + 1, w)
    full[:, cols] = errors[(-torch.arange(h)) % h][:, w - cols]  # err(i, j) = err(-i, -j)
    return torch.fft.fftshift(full).float()


def weighted_radius(err_map: torch.Tensor) -> float:
    """rho_bar = sum err * rho / sum err over a centred heat map (methods.md 6.4, ours); NaN if all zero."""
    err = err_map.to(torch.float64)
    total = err.sum()
    if total == 0:
        return float("nan")
    return float((err * radius_grid(*err.shape, device=err.device)).sum() / total)


# ---------------------------------------------------------------- plots


def _numpy(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a


def colour_range(maps: Iterable[object], log: bool = False) -> tuple[float, float]:
    """(min, max) over the finite (positive, if ``log``) values of all maps: one scale for every panel."""
    import numpy as np

    values = np.concatenate([np.asarray(_numpy(m), dtype=float).ravel() for m in maps])
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    if not len(values):
        return (1.0, 10.0) if log else (0.0, 1.0)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:  # a constant map: widen the range so that it shows as one colour of a labelled bar
        hi = lo * 10 if log else lo + max(abs(lo), 1.0) * 0.1
    return lo, hi


def map_figure(
    maps: Mapping[str, object],
    title: str,
    cbar: str,
    *,
    log: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    notes: Mapping[str, str] | None = None,
):
    """Centred 2-D maps side by side (one panel per label, ``notes`` under the label) on ONE colour scale.

    Axes in cycles/image with DC at (0, 0) and positive frequencies up and right; the colour range is
    ``vmin``/``vmax`` or else the data's over all panels (log-scaled when ``log``), with one colour bar
    labelled ``cbar``. Returns the figure.
    """
    from matplotlib.colors import LogNorm, Normalize

    from bench.core import plotting as figures

    lo, hi = colour_range(maps.values(), log)
    norm = (LogNorm if log else Normalize)(vmin=lo if vmin is None else vmin, vmax=hi if vmax is None else vmax)
    fig, axes = figures.panels(len(maps), width=3.3, height=3.3, cols=4)
    im = None
    for ax, (label, arr) in zip(axes, maps.items()):
        a = _numpy(arr)
        extent = figures.frequency_axes(ax, a.shape)
        im = ax.imshow(a, norm=norm, cmap="viridis", origin="lower", extent=extent, interpolation="nearest")
        note = (notes or {}).get(label)
        ax.set_title(f"{label}\n{note}" if note else label, fontsize="medium")
    if im is not None:
        bar = fig.colorbar(im, ax=axes, label=cbar, shrink=0.9)
        if log:
            figures.plain_log_ticks(bar.ax.yaxis)
    figures.title(fig, title, figures.FREQUENCY_X, figures.FREQUENCY_Y)
    return fig


def plot_maps(maps: Mapping[str, object], path: str | Path, title: str, cbar: str, **options) -> Path:
    """``map_figure(maps, title, cbar, **options)`` saved as ``path`` (PNG) and the PDF beside it; returns ``path``."""
    from bench.core import plotting as figures

    figures.save(map_figure(maps, title, cbar, **options), path)
    return Path(path)


def plot_map(
    arr, path: str | Path, title: str, vmin: float | None = None, vmax: float | None = None, cbar: str = ""
) -> Path:
    """One centred 2-D map (spectrum, heat map) with frequency axes and a colour bar ``cbar``; PNG + PDF."""
    return plot_maps({"": arr}, path, title, cbar, vmin=vmin, vmax=vmax)


def plot_profiles(panels: Mapping[str, Mapping[str, object]], path: str | Path, title: str, ylabel: str) -> Path:
    """Radial profiles, one panel per key of ``panels`` (one line per label, shared y axis); PNG + PDF.

    x = radius from DC in cycles/image (entry k of a profile averages the bins k <= rho < k + 1); log y.
    """
    from matplotlib.ticker import MaxNLocator

    from bench.core import plotting as figures

    fig, axes = figures.panels(len(panels), width=4.2, height=3.4, cols=3, sharey=True)
    for ax, (name, profiles) in zip(axes, panels.items()):
        for j, (label, profile) in enumerate(profiles.items()):
            ax.plot(_numpy(profile), marker=".", color=f"C{j % 10}", label=label)
        ax.set_title(name, fontsize="medium")
        ax.set_yscale("log")
        figures.plain_log_ticks(ax.yaxis)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if profiles:
            ax.legend(fontsize="small")
    figures.title(fig, title, "radius from DC (cycles/image)", ylabel)
    figures.save(fig, path)
    return Path(path)


FFTMode = Literal["batch2d", "per_sample"]


def frequency_regularizer(logits_adv: torch.Tensor, logits_nat: torch.Tensor, fft: FFTMode = "batch2d") -> torch.Tensor:
    """Mean |Re|, |Im| of the unnormalised DFT of ``logits_adv - logits_nat`` (B x C).

    ``batch2d``: 2-D DFT over (batch, class), = ``nn.L1Loss()(torch.rfft(Z_adv, 2, onesided=False),
    torch.rfft(Z_nat, 2, onesided=False))`` of the FR code. ``per_sample``: 1-D DFT over classes.
    """
    diff = logits_adv - logits_nat
    diff = diff.to(torch.promote_types(diff.dtype, torch.float32))
    if fft == "batch2d":
        spec = torch.fft.fft2(diff)
    elif fft == "per_sample":
        spec = torch.fft.fft(diff, dim=-1)
    else:
        raise ValueError(f"unknown fft {fft!r}")
    return torch.view_as_real(spec).abs().mean()
