"""External adversarial examples (``bench/evaluation/external.py``): both layouts load, every bad file
gives one line naming the file and the first offending index, and the digest keys the content."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from bench.evaluation.external import ExternalError, load_external
from bench.types import ThreatModel

LINF = ThreatModel("Linf", Fraction(8, 255), "8/255")


@pytest.fixture
def clean() -> torch.Tensor:
    return torch.randint(0, 256, (6, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def unit(clean: torch.Tensor) -> torch.Tensor:
    return clean.float() / 255


def save(tmp_path: Path, obj, name: str = "advs.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def inside(clean: torch.Tensor, threat: ThreatModel = LINF, seed: int = 1) -> torch.Tensor:
    """Adversarial-looking images strictly inside the threat's ball and [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = unit(clean)
    step = (torch.rand(x.shape, generator=g) * 2 - 1) * float(threat.eps) * 0.9
    if threat.norm != "Linf":
        n = x[0].numel()
        step = step / (n if threat.norm == "L1" else n**0.5)
    return (x + step).clamp(0, 1)


def one_line_error(path: Path, clean: torch.Tensor, threat: ThreatModel = LINF, **kw) -> str:
    with pytest.raises(ExternalError) as info:
        load_external(path, clean, threat, **kw)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path.name}: ")
    return text


def test_a_plain_tensor_in_test_id_order_loads_with_its_content_digest(tmp_path, clean):
    x = inside(clean)
    path = save(tmp_path, x)
    out = load_external(path, clean, LINF)
    assert torch.equal(out.x_adv, x) and torch.equal(out.ids, torch.arange(6))
    assert out.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert 0 < out.max_distance <= 8 / 255
    copy = tmp_path / "renamed.pt"
    copy.write_bytes(path.read_bytes())
    assert load_external(copy, clean, LINF).digest == out.digest  # keyed by content, not by name
    assert load_external(save(tmp_path, inside(clean, seed=2)), clean, LINF).digest != out.digest


def test_a_mapping_with_ids_checks_each_image_against_its_own_test_image(tmp_path, clean):
    ids = torch.tensor([4, 1])
    x = inside(clean)[ids]
    out = load_external(save(tmp_path, {"ids": ids, "x_adv": x}), clean, LINF)
    assert torch.equal(out.ids, ids) and torch.equal(out.x_adv, x)
    swapped = save(tmp_path, {"ids": torch.tensor([1, 4]), "x_adv": x})  # images under the wrong ids
    assert "x_adv[0]: outside the Linf ball of eps 8/255 around test image 1" in one_line_error(swapped, clean)


def test_a_float_clean_split_and_a_prefix_of_the_test_split(tmp_path, clean):
    x = inside(clean)[:3]
    out = load_external(save(tmp_path, x), unit(clean), LINF, order=range(3))
    assert out.ids.tolist() == [0, 1, 2]
    assert "3 images, expected 6" in one_line_error(save(tmp_path, x), clean)


@pytest.mark.parametrize(
    ("threat", "scale"), [(ThreatModel("L2", Fraction(1, 2), "1/2"), 0.5), (ThreatModel("L1", Fraction(2), "2"), 2.0)]
)
def test_the_ball_is_the_threats_norm(tmp_path, clean, threat, scale):
    x = inside(clean, threat)
    assert load_external(save(tmp_path, x), clean, threat).max_distance <= scale
    bad = x.clone()
    bad[3] = unit(clean)[3]
    bad[3, 0, 0, 0] = 1.0 - bad[3, 0, 0, 0].round()  # one pixel moved by >= 0.5 ...
    bad[3, 0, 1, :] = 1.0 - bad[3, 0, 1, :].round()  # ... and a row: far outside either ball
    text = one_line_error(save(tmp_path, bad), clean, threat)
    assert f"x_adv[3]: outside the {threat.norm} ball of eps {threat.eps_text} around test image 3 (distance " in text


def test_outside_the_linf_ball_names_the_first_offending_index_and_distance(tmp_path, clean):
    x = inside(clean)
    x[2] = (unit(clean)[2] + 0.05).clamp(0, 1)
    x[4] = (unit(clean)[4] - 0.05).clamp(0, 1)
    text = one_line_error(save(tmp_path, x), clean)
    assert text == "advs.pt: x_adv[2]: outside the Linf ball of eps 8/255 around test image 2 (distance 0.05)"


def test_the_tolerance_is_check_adversarials(tmp_path, clean):
    x = unit(clean).clone()
    x[0, 0, 0, 0] = min(float(x[0, 0, 0, 0]) + 8 / 255 + 5e-7, 1.0) if x[0, 0, 0, 0] < 0.5 else float(x[0, 0, 0, 0]) - 8 / 255 - 5e-7
    load_external(save(tmp_path, x), clean, LINF)  # within 1e-6 of the ball
    x[0, 0, 0, 0] += 1e-5 if x[0, 0, 0, 0] > unit(clean)[0, 0, 0, 0] else -1e-5
    assert "x_adv[0]: outside the Linf ball" in one_line_error(save(tmp_path, x), clean)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (lambda x: x[:, :, :, :3], "tensor has shape (6, 1, 4, 3), expected (6, 1, 4, 4) (N x C x H x W of the test split)"),
        (lambda x: x[0], "1 images, expected 6"),
        (lambda x: x.repeat(1, 3, 1, 1), "tensor has shape (6, 3, 4, 4), expected (6, 1, 4, 4)"),
        (lambda x: (x * 255).to(torch.uint8), "tensor has dtype torch.uint8, expected floating point values in [0, 1]"),
        (lambda x: torch.cat([x[:5], x[5:] * 0 + 1.5]), "x_adv[5]: outside [0, 1] (values in [1.5, 1.5])"),
        (lambda x: torch.cat([x[:1], x[1:2] - 2, x[2:]]), "x_adv[1]: outside [0, 1]"),
        (lambda x: torch.cat([x[:3], x[3:4] * float("nan"), x[4:]]), "x_adv[3]: not finite"),
        (lambda x: [x], "expected a tensor or a mapping {'ids': LongTensor, 'x_adv': tensor}, got list"),
        (lambda x: {"x_adv": x}, "missing key 'ids'"),
        (lambda x: {"ids": torch.arange(6), "x_adv": x, "eps": 1.0}, "unknown key 'eps'"),
        (lambda x: {"ids": torch.arange(6.0), "x_adv": x}, "ids: expected a 1-D integer tensor, got a torch.float32 tensor"),
        (lambda x: {"ids": torch.tensor([0, 9]), "x_adv": x[:2]}, "ids[1]: test id 9 out of range (the test split has 6 images)"),
        (lambda x: {"ids": torch.tensor([0, 2, 2]), "x_adv": x[:3]}, "ids[2]: test id 2 appears twice"),
        (lambda x: {"ids": torch.tensor([0, 2]), "x_adv": x[:3]}, "x_adv has 3 images for 2 ids"),
        (lambda x: {"ids": torch.tensor([0, 2]), "x_adv": x[:2].tolist()}, "x_adv: expected a tensor, got list"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path, clean, obj, message):
    text = one_line_error(save(tmp_path, obj(inside(clean))), clean)
    assert message in text, text


def test_unreadable_files(tmp_path, clean):
    assert "missing.pt: cannot read: " in one_line_error(tmp_path / "missing.pt", clean)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip or pickle")
    assert "garbage.pt: not a torch .pt file of tensors (" in one_line_error(garbage, clean)
    code = tmp_path / "code.pt"
    torch.save({"ids": torch.arange(6), "x_adv": inside(clean), "fn": Path}, code)  # not loadable with weights_only
    assert "code.pt: not a torch .pt file of tensors (" in one_line_error(code, clean)
