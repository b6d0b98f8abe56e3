"""The per-sample flags of the columns that are not attacks: common corruptions and external adversarial examples.

Both compare the model's predictions on the clean test images with those on other images of the same
test ids, batch by batch (fp32, the model frozen in eval mode; a randomised model's verdicts are
majorities over draws, as for attacks: ``bench/evaluation/randomised.py``). The ``robust`` flags differ:

* a corruption column counts every test image classified correctly under the corruption, whether or
  not it was classified correctly when clean (the corruption benchmarks' accuracy, Hendrycks &
  Dietterich 2019); ``clean`` is kept so that its evaluations align with the attacks';
* an external column counts a sample as robust when it is classified correctly clean *and* on its
  adversarial example, as an attack's column does; a test id the file has no example for counts as
  robust when clean (no adversarial example was found for it), and how many there were is returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.core.errors import DatasetMissingError
from bench.core.modes import frozen_eval
from bench.core.progress import Progress
from bench.data import cifar_c
from bench.data.corruptions import corrupt
from bench.data.loader import to_unit
from bench.evaluation.evaluate import Flags, concat_flags
from bench.evaluation.external import External
from bench.evaluation.randomised import Verdicts

Images = Callable[[int, int], torch.Tensor]  # (start, stop) -> the other images of those test examples, float [0, 1]


def _compare(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, other: Images, batch_size: int, name: str,
    progress: Progress | None, both: bool, present: torch.Tensor | None = None,
) -> Flags:  # fmt: skip
    """Clean flags and, per sample, whether ``other``'s image is classified correctly (``both``: and the clean
    one too). Where ``present`` is False the sample has no other image: its flag is its clean flag."""
    start = time.perf_counter()
    clean_parts, robust_parts = [], []
    verdicts = Verdicts()
    starts = range(0, len(x), batch_size)
    it = progress.bar(starts, len(starts), f"eval {name}") if progress else starts
    with frozen_eval(model):
        for i in it:
            xb, yb = to_unit(x[i : i + batch_size]), y[i : i + batch_size]
            clean = verdicts.clean(model, xb, yb)
            correct = verdicts.robust(model, other(i, i + len(yb)).to(xb.device, torch.float32), yb)
            robust = clean & correct if both else correct
            if present is not None:
                robust = torch.where(present[i : i + len(yb)], robust, clean)
            clean_parts.append(clean.cpu())
            robust_parts.append(robust.cpu())
    flags = Flags(concat_flags(clean_parts), concat_flags(robust_parts), 0.0, time.perf_counter() - start)
    flags.model_check = verdicts.record()
    return flags


def corruption_flags(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    corrupted: Images,
    batch_size: int,
    name: str,
    progress: Progress | None = None,
) -> Flags:
    """Clean flags of ``x`` (uint8) and, per sample, whether its corrupted image ``corrupted(start, stop)`` is classified correctly."""
    return _compare(model, x, y, corrupted, batch_size, name, progress, both=False)


def external_flags(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray, external: External, batch_size: int, name: str,
    progress: Progress | None = None,
) -> tuple[Flags, dict[str, int]]:  # fmt: skip
    """The flags of the adversarial examples ``external`` (checked by ``load_external``) on the test examples
    ``ids`` (``x``, ``y``), and the counts ``missing`` (evaluated ids the file has no example for) and ``unused``
    (the file's examples of ids not evaluated)."""
    where = {int(t): row for row, t in enumerate(external.ids.tolist())}
    rows = torch.tensor([where.get(int(t), -1) for t in ids], dtype=torch.long)
    present = rows >= 0
    images = torch.zeros((len(ids), *x.shape[1:]), dtype=torch.float32)
    images[present] = external.x_adv[rows[present]]
    flags = _compare(
        model, x, y, lambda a, b: images[a:b], batch_size, name, progress, both=True, present=present.to(x.device)
    )
    flags.max_dist = external.max_distance
    counts = {"missing": int((~present).sum()), "unused": len(where) - int(present.sum())}
    return flags, counts


def corrupted_images(
    dataset: str,
    name: str,
    severity: int,
    source: str,
    ids: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    roots: list[Path],
) -> torch.Tensor:
    """The test images ``ids`` (uint8 ``x``, labels ``y``) under corruption ``name`` at ``severity``, uint8 on the CPU:
    generated (``bench/data/corruptions``, seeded by test id) or read from the released files (``bench/data/cifar_c.py``),
    whose labels must be the test split's."""
    if source == "generated":
        return corrupt(name, x.cpu(), severity, ids)
    images, labels = cifar_c.read(dataset, name, severity, roots)
    index = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    if len(index) and len(images) <= int(index.max()):
        raise DatasetMissingError(f"{dataset}-c {name}: {len(images)} images per severity, fewer than the test split's")
    wrong = int((labels[index] != y.cpu()).sum())
    if wrong:
        raise DatasetMissingError(
            f"{dataset}-c labels.npy: disagrees with the {dataset} test labels on {wrong} of {len(ids)} test images (not this dataset's files?)"
        )
    return images[index]
