"""Fourier-domain analyses (methods.md section 6): bases, filters, heat map, spectra, plots."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from bench.analysis import fourier as F
from bench.attacks.pgd import pgd


def centred(i: int, j: int, h: int, w: int) -> tuple[int, int]:
    """Centred-map position of unshifted frequency (i, j)."""
    return (i + h // 2) % h, (j + w // 2) % w


@pytest.mark.parametrize("size", [28, 32])
def test_basis_unit_norm_and_support(size):
    n = size // 2
    for i, j in [(0, 0), (n, 0), (0, n), (n, n), (3, 5), (size - 1, n), (5, 0), (size - 2, 7)]:
        u = F.fourier_basis(size, size, i, j)
        assert u.shape == (size, size) and u.dtype == torch.float32
        assert abs(float(u.norm()) - 1) < 1e-5
        mag = torch.fft.fft2(u).abs()
        support = {tuple(p) for p in (mag > 1e-4 * mag.max()).nonzero().tolist()}
        assert support == {(i, j), ((-i) % size, (-j) % size)}
    with pytest.raises(ValueError):
        F.fourier_basis(size, size, 0, n + 1)


def test_masks_and_filters():
    torch.manual_seed(0)
    assert int(F.square_mask(32, 32, 16).sum()) == 256 and int(F.square_mask(28, 28, 8).sum()) == 64
    band = F.square_mask(32, 32, 16)[16]  # DC row: offsets -8 .. 7 from DC
    assert band.nonzero().flatten().tolist() == list(range(8, 24))
    assert F.square_mask(7, 9, 3).sum() == 9 and F.square_mask(7, 9, 3)[3, 4]  # odd sizes: centred on DC
    for x in [torch.rand(2, 3, 32, 32), torch.rand(3, 1, 28, 28), torch.rand(2, 3, 7, 9)]:
        h, w = x.shape[-2:]
        corner = float(F.radius_grid(h, w).max())
        torch.testing.assert_close(F.filter_images(x, F.circle_mask(h, w, corner + 1)), x, atol=1e-5, rtol=0)
        if h % 2 == 0:
            torch.testing.assert_close(F.filter_images(x, F.square_mask(h, w, h)), x, atol=1e-5, rtol=0)
        for mask in [F.square_mask(h, w, 4), F.circle_mask(h, w, 3)]:
            low, high = F.filter_images(x, mask), F.filter_images(x, mask, keep="high")
            assert low.shape == x.shape and low.dtype == x.dtype
            torch.testing.assert_close(low + high, x, atol=1e-5, rtol=0)
            assert F.filter_images(x, mask, clamp=True).min() >= 0
    # A low-pass keeps only the centre: the DC-only filter returns the per-channel mean.
    x = torch.rand(2, 3, 28, 28)
    dc_only = F.filter_images(x, F.circle_mask(28, 28, 0.5))
    torch.testing.assert_close(dc_only, x.mean((2, 3), keepdim=True).expand_as(x))
    with pytest.raises(ValueError):
        F.filter_images(x, F.circle_mask(28, 28, 2), keep="band")


class LinearPair(nn.Module):
    """f(x) = [w.(x - 0.5), -w.(x - 0.5)]."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        s = ((x - 0.5) * self.w).sum((1, 2, 3))
        return torch.stack([s, -s], 1)


def test_heatmap_of_linear_model_matches_analytic():
    h = w = 28
    i0, j0, m, v, n = 3, 5, 0.05, 0.3, 256
    u = F.fourier_basis(h, w, i0, j0)
    model = LinearPair(u).train()
    s = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    x = 0.5 + s[:, None, None, None] * m * u  # margin m along U_{i0,j0}; no clipping at v = 0.3
    y = (s < 0).long()
    err = F.fourier_heatmap(model, x, y, v, batch_size=1024, generator=torch.Generator().manual_seed(0))
    assert err.shape == (h, w)
    assert model.training and model.w.requires_grad  # frozen_eval restored the model
    peaks = [centred(i0, j0, h, w), centred(-i0, -j0, h, w)]
    for p in peaks:
        assert abs(float(err[p]) - 0.5) < 0.12  # the sign flips the prediction half the time
    assert err[peaks[0]] == err[peaks[1]]  # point symmetry
    rest = err.clone()
    for p in peaks:
        rest[p] = 0
    assert float(rest.abs().max()) == 0.0  # orthogonal bases never move the logit
    rho = float(F.radius_grid(h, w)[peaks[0]])
    assert F.weighted_radius(err) == pytest.approx(rho, rel=1e-6)


def test_heatmap_odd_size_three_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 7, 3))
    x, y = torch.rand(5, 3, 7, 9), torch.randint(0, 3, (5,))
    err = F.fourier_heatmap(model, x, y, v=4.0, batch_size=8, generator=torch.Generator().manual_seed(1))
    assert err.shape == (7, 9) and err.min() >= 0 and err.max() <= 1
    again = F.fourier_heatmap(model, x, y, v=4.0, batch_size=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, err)  # one basis per group in both: same signs, forward chunking is irrelevant
    assert torch.isnan(torch.tensor(F.weighted_radius(torch.zeros(7, 9))))


def test_perturbation_spectrum_and_energy_fraction():
    torch.manual_seed(0)
    h = w = 32
    i0, j0 = 3, 4  # radius 5
    signs = torch.randint(0, 2, (6, 3, 1, 1)) * 2.0 - 1
    delta = 0.03 * signs * F.fourier_basis(h, w, i0, j0)
    E = F.perturbation_spectrum(delta)
    assert E.shape == (h, w)
    peak = divmod(int(E.argmax()), w)
    assert peak in {centred(i0, j0, h, w), centred(-i0, -j0, h, w)}
    assert F.energy_fraction(E, 5.01) == pytest.approx(1.0, abs=1e-6)
    assert F.energy_fraction(E, 4.99) == pytest.approx(0.0, abs=1e-6)
    profile = F.radial_profile(E)
    assert len(profile) == int(F.radius_grid(h, w).max()) + 1 and int(profile.argmax()) == 5
    assert not torch.isnan(F.radial_profile(torch.rand(28, 28))).any()
    x = torch.rand(2, 3, h, w)
    amp = F.centred_amplitude(x)
    assert amp.shape == (2, h, w)
    torch.testing.assert_close(amp[:, 16, 16], torch.log1p(x.sum((2, 3))).mean(1))


def test_filtered_accuracy_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).train()
    x, y = torch.rand(12, 1, 28, 28), torch.randint(0, 3, (12,))
    with torch.no_grad():
        plain = float((model(x).argmax(1) == y).float().mean())
    masks = {"b28": F.square_mask(28, 28, 28), "b8": F.square_mask(28, 28, 8), "r4": F.circle_mask(28, 28, 4)}
    clean_only = F.filtered_accuracy(model, x, y, masks, batch_size=5)
    assert set(clean_only) == set(masks) and clean_only["b28"] == (pytest.approx(plain), None)
    all_pass = F.filtered_accuracy(model, x, y, {"none": F.circle_mask(28, 28, 0)}, keep="high")
    assert all_pass["none"] == (pytest.approx(plain), None)

    def attack(m, xb, yb):
        return pgd(m, xb, yb, eps=0.1, alpha=0.05, steps=2, init="none")

    x_adv = attack(model.eval(), x, y)
    with torch.no_grad():
        adv_plain = float((model(x_adv).argmax(1) == y).float().mean())
    model.train()
    for in_loop in (False, True):
        out = F.filtered_accuracy(model, x, y, masks, attack=attack, in_loop=in_loop, batch_size=5)
        for clean, adv in out.values():
            assert 0 <= clean <= 1 and adv is not None and 0 <= adv <= 1
        assert out["b28"][0] == pytest.approx(plain)
        if not in_loop:
            assert out["b28"][1] == pytest.approx(adv_plain)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_plots(tmp_path):
    spectrum = F.centred_amplitude(torch.rand(1, 1, 28, 28))[0]
    path = F.plot_map(spectrum, tmp_path / "map.png", "spectrum", vmin=0, vmax=1, cbar="error rate")
    assert path.exists() and path.stat().st_size > 1000
    profiles = {"natural": F.radial_profile(spectrum), "AT": F.radial_profile(spectrum).numpy() * 0.5}
    path = F.plot_profiles({"PGD": profiles}, tmp_path / "sub" / "profiles.png", "profiles", "mean |E|")
    assert path.exists() and path.stat().st_size > 1000 and path.with_suffix(".pdf").stat().st_size > 1000


def test_import_does_not_load_matplotlib():
    code = "import sys, bench.analysis.fourier; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
