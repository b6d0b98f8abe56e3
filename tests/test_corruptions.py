"""Generated common corruptions (``bench/data/corruptions``): the contract every corruption keeps
(dtype, shape, range, per-sample determinism) and each one's defining property or exact formula."""

from __future__ import annotations

import colorsys
import io
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.core.errors import DatasetMissingError
from bench.data import load_dataset
from bench.data.corruptions import NAMES, blur, corrupt, digital, noise, pixel_scale, sample_seed, weather
from bench.registry import CORRUPTIONS, DATASETS, RegistryError

DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}


@pytest.fixture(scope="module")
def grey() -> torch.Tensor:
    """24 Fashion-MNIST test images (28 x 28 grey uint8), or seeded blobs where the dataset is absent."""
    try:
        return load_dataset("fashion-mnist", DATASETS.get("fashion-mnist").params()).test_x[:24].clone()
    except DatasetMissingError:
        g = torch.Generator().manual_seed(0)
        blobs = F.avg_pool2d(torch.rand(24, 1, 36, 36, generator=g), 9, 1)  # smooth shapes, 28 x 28
        return (blobs.sub(blobs.amin()).div(blobs.amax() - blobs.amin()) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def colour(grey) -> torch.Tensor:
    """The grey images at 32 x 32, tinted per image and channel: natural-looking colour test images."""
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(grey.float() / 255, size=(32, 32), mode="bilinear", align_corners=False)
    tint = 0.4 + 0.6 * torch.rand(len(x), 3, 1, 1, generator=g)
    return ((x * tint + 0.1 * (1 - x)) * 255).round().clamp(0, 255).to(torch.uint8)


def test_the_fifteen_are_registered_in_the_papers_order():
    assert len(NAMES) == 15 and sorted(NAMES) == CORRUPTIONS.names()
    assert all(CORRUPTIONS.get(n).version == 1 for n in NAMES)
    with pytest.raises(RegistryError, match="did you mean 'fog'"):
        corrupt("fogg", torch.zeros(1, 1, 8, 8), 1, [0])
    with pytest.raises(ValueError, match="severity 6"):
        corrupt("fog", torch.zeros(1, 1, 8, 8), 6, [0])


def test_the_size_rule():
    assert pixel_scale(32, 32) == pixel_scale(28, 28) == 1.0 and pixel_scale(64, 64) == 2.0


# ------------------------------------------------------------------------------ contract, every corruption


@pytest.mark.parametrize("name", NAMES)
def test_dtype_shape_range_and_determinism_per_sample_id(name, grey, colour):
    for x in (grey[:6], colour[:6]):
        ids = torch.tensor([10, 11, 12, 13, 14, 15])
        out = corrupt(name, x, 3, ids)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        flo = corrupt(name, x.float() / 255, 3, ids)
        assert flo.dtype == torch.float32 and flo.shape == x.shape and flo.min() >= 0 and flo.max() <= 1
        assert (flo * 255 - out.float()).abs().max() <= 1  # the uint8 path is the float path, rounded
        perm = torch.tensor([4, 0, 5, 2, 1, 3])
        assert torch.equal(corrupt(name, x[perm], 3, ids[perm]), out[perm])  # any batch order
        assert torch.equal(corrupt(name, x[2:3], 3, ids[2:3]), out[2:3])  # any batch size
        again = corrupt(name, x, 3, ids + 100)  # other test ids: other draws, same operation otherwise
        assert torch.equal(again, out) == (name in DETERMINISTIC)


@pytest.mark.parametrize("name", NAMES)
def test_blur_and_noise_free_corruptions_map_a_constant_image_to_a_constant_one(name):
    x = torch.full((2, 3, 32, 32), 0.4)
    out = corrupt(name, x, 5, [0, 1])
    flat = out.flatten(2)
    is_flat = bool((flat.amax(2) - flat.amin(2) < 1e-5).all())
    # noise, snow, frost and fog add structure; the blurs, the warps and the digital ones keep flat images flat
    assert is_flat == (name in {"defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "brightness", "contrast",
                                "elastic_transform", "pixelate", "jpeg_compression"})  # fmt: skip


# not monotone in distance by the published parameters themselves: glass_blur's severities 1-3 differ
# only in the blur, which partly undoes the swaps; elastic_transform's affine part shrinks (8 % to 3 % of
# the size) as its elastic part grows; frost's image weight falls while the texture weight stays at .4
# from severity 3 to 4. fog's haze changes shape with its decay (2.5 at severity 3, 2 at 4) while the
# rescaling max(x) / (max(x) + c) darkens: on bright images severity 4 can land nearer than 3.
NOT_MONOTONE = {"glass_blur", "elastic_transform", "frost"}
LOOSELY = {"fog"}  # 1 < 3 < 5 only


@pytest.mark.parametrize("name", [n for n in NAMES if n not in NOT_MONOTONE])
def test_the_distance_to_the_clean_image_grows_with_severity(name, grey, colour):
    for x in (grey, colour):
        ids = torch.arange(len(x))
        d = [float((corrupt(name, x, s, ids).float() - x.float()).abs().mean()) / 255 for s in range(1, 6)]
        if name in LOOSELY:
            assert d[0] < d[2] < d[4], d
        else:
            assert all(b >= a - 2e-4 for a, b in itertools.pairwise(d)), d  # motion_blur 3 -> 4: the same taps carry the weight
        assert d[-1] > d[0] > 0, d


# ------------------------------------------------------------------------------ noise


def test_gaussian_noise_has_the_published_std():
    x = torch.full((4, 3, 64, 64), 0.5)
    for severity, c in enumerate(noise.GAUSSIAN, 1):
        r = corrupt("gaussian_noise", x, severity, range(4)) - x
        assert abs(float(r.std()) - c) < 0.03 * c and abs(float(r.mean())) < 0.02 * c


def test_shot_noise_is_poisson_counts_over_c():
    x = torch.full((4, 3, 64, 64), 0.5)
    for severity, c in enumerate(noise.SHOT, 1):
        y = corrupt("shot_noise", x, severity, range(4))
        counts = y * c
        assert torch.allclose(counts, counts.round(), atol=1e-3)  # integers over c
        assert abs(float(y.var()) - 0.5 / c) < 0.05 * 0.5 / c and abs(float(y.mean()) - 0.5) < 0.005


def test_impulse_noise_replaces_a_fraction_c_by_salt_or_pepper():
    x = torch.full((4, 3, 64, 64), 0.5)
    for severity, c in enumerate(noise.IMPULSE, 1):
        y = corrupt("impulse_noise", x, severity, range(4))
        changed = y != 0.5
        assert set(y[changed].unique().tolist()) <= {0.0, 1.0}
        assert abs(float(changed.float().mean()) - c) < 0.1 * c + 0.002
        assert abs(float((y == 1).float().sum() / changed.sum()) - 0.5) < 0.06


# ------------------------------------------------------------------------------ blur


def test_defocus_disk_is_normalised_symmetric_and_a_disk():
    k = blur.disk(1.0, 0.2)
    assert k.shape == (17, 17) and float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    assert float(k[8, 8]) > float(k[8, 9]) > float(k[9, 9]) > 0  # the five-pixel disk, slightly smoothed
    assert float(blur.disk(0.3, 0.4)[8, 9]) / float(blur.disk(0.3, 0.4)[8, 8]) == pytest.approx(torch.exp(torch.tensor(-1 / (2 * 0.16))).item(), rel=1e-4)


def test_motion_blur_is_a_one_sided_line_of_gaussian_taps():
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 16, 20] = 1.0
    out = blur.motion(x, 6, 2.0, torch.tensor([0.0]))
    k, _, _ = blur.motion_taps(6, 2.0, torch.tensor([0.0]))
    assert len(k) == 13 and float(k.sum()) == pytest.approx(1.0)
    assert torch.count_nonzero(out[0, 0, [r for r in range(32) if r != 16]]) == 0  # one row only
    assert torch.allclose(out[0, 0, 16, 8:21].flip(0), k) and float(out[0, 0, 16, 21:].sum()) == 0  # one side only
    vertical = blur.motion(x, 6, 2.0, torch.tensor([90.0]))
    assert torch.count_nonzero(vertical[0, 0, :, 20]) == 13 and torch.count_nonzero(vertical) == 13


def test_zoom_blur_uses_the_scripts_factors_and_an_exact_centre_zoom():
    assert [len(blur.zoom_factors(s)) for s in range(1, 6)] == [7, 12, 16, 21, 26]
    assert blur.zoom_factors(5)[-1] == pytest.approx(1.25)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(blur.clipped_zoom(x, 1.0), x)
    z = blur.clipped_zoom(x, 2.0)  # the centre 16 x 16, magnified: its pixels land on even positions
    assert torch.allclose(z[0, :, 0, 0], x[0, :, 8, 8]) and torch.allclose(z[0, :, -1, -1], x[0, :, 23, 23])


def test_glass_blur_swaps_only_neighbours():
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 16, 16] = 1.0
    offsets = torch.full((1, 1, 30, 30, 2), 0)
    offsets[0, 0, 31 - 16, 31 - 16] = torch.tensor([-1, -1])  # the sweep runs from (31, 31) down to (2, 2)
    y = blur._swap_sweeps(x.clone(), offsets, 1)
    assert float(y[0, 0, 15, 15]) == 1.0 and float(y.sum()) == 1.0


# ------------------------------------------------------------------------------ weather


def test_plasma_is_normalised_and_fog_keeps_black_black():
    m = weather.plasma([torch.Generator().manual_seed(3)], 32, 2.0)
    assert m.shape == (1, 32, 32) and float(m.min()) == 0.0 and float(m.max()) == pytest.approx(1.0)
    assert float(corrupt("fog", torch.zeros(1, 3, 32, 32), 5, [0]).max()) == 0.0  # scaled by max(x) / (max(x) + c)


def test_snow_and_frost_brighten():
    x = torch.full((2, 3, 32, 32), 0.3)
    assert float(corrupt("snow", x, 3, [0, 1]).mean()) > 0.3 + 0.02
    tex = weather.frost_texture([torch.Generator().manual_seed(0)], 32, 32, 3)
    assert tex.min() >= 0 and tex.max() <= 1 and float(tex[0, 2].mean()) > float(tex[0, 0].mean())  # pale blue
    a, b = weather.FROST[4]
    out = corrupt("frost", x[:1], 5, [7])
    assert torch.allclose(out, (a * x[:1] + b * weather.frost_texture([torch.Generator().manual_seed(sample_seed("frost", 5, 7))], 32, 32, 3)).clamp(0, 1))


# ------------------------------------------------------------------------------ digital


def test_brightness_is_the_hsv_value_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 4, 4, generator=g)
    x[0, :, 0, 0] = 0.0  # black becomes grey
    for severity, c in enumerate(digital.BRIGHTNESS, 1):
        out = corrupt("brightness", x, severity, [0])
        for i in range(4):
            for j in range(4):
                h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
                want = colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))
                assert out[0, :, i, j].tolist() == pytest.approx(list(want), abs=1e-6)
    assert torch.allclose(corrupt("brightness", x[:, :1], 2, [0]), (x[:, :1] + 0.1).clamp(0, 1))  # grey: + c


def test_contrast_scales_around_each_channels_mean():
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(2, 3, 8, 8, generator=g)
    for severity, c in enumerate(digital.CONTRAST, 1):
        out = corrupt("contrast", x, severity, [0, 1])
        m = x.mean((2, 3), keepdim=True)
        assert torch.allclose(out, (x - m) * c + m, atol=1e-6)
        assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), atol=1e-6)


def test_elastic_severity_one_is_a_pure_affine_warp():
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, :, 10:22] = 1.0  # a vertical bar: an affine map keeps it a straight band
    out = corrupt("elastic_transform", x, 1, [5])
    assert not torch.equal(out, x) and float(out.mean()) == pytest.approx(float(x.mean()), abs=0.12)
    assert torch.allclose(digital.smooth(torch.ones(1, 16, 16), 2.0), torch.ones(1, 16, 16))  # mirrored borders


def test_jpeg_really_re_encodes_at_the_published_quality():
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 3, 32, 32, generator=g) * 255).round().to(torch.uint8)
    for severity, q in enumerate(digital.JPEG_QUALITY, 1):
        buf = io.BytesIO()
        Image.fromarray(x[0].permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=q)
        want = torch.from_numpy(np.array(Image.open(io.BytesIO(buf.getvalue())))).permute(2, 0, 1)
        out = corrupt("jpeg_compression", x, severity, [0])
        assert torch.equal(out[0], want) and not torch.equal(out, x)
    flat = torch.full((1, 1, 16, 16), 128, dtype=torch.uint8)
    assert torch.equal(corrupt("jpeg_compression", flat, 5, [0]), flat)  # a flat block survives any quality


def test_pixelate_is_the_box_down_and_up_resize():
    x = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    x[0, 0, :, ::2] = 255  # one-pixel stripes: averaged away by the downscale
    out = corrupt("pixelate", x, 5, [0]).float()  # 32 -> int(32 * .65) = 20 -> 32
    assert out.std() < x.float().std() * 0.8 and abs(float(out.mean()) - float(x.float().mean())) < 10
