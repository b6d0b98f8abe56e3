"""Issue #26 phase 1: what the new pieces cost on this machine (torch limited to 2 threads).

Usage: .venv/bin/python scripts/threats_cost.py corruptions|pgd|aa|io  (Fashion-MNIST must be installed)
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import bench
from bench.data import load_dataset
from bench.data.corruptions import NAMES, corrupt
from bench.registry import DATASETS

torch.set_num_threads(2)
what = sys.argv[1]
fm = load_dataset("fashion-mnist", DATASETS.get("fashion-mnist").params())
if what == "corruptions":
    n = 1000
    x = fm.test_x[:n]
    xc = torch.nn.functional.interpolate(x.float(), size=(32, 32), mode="bilinear").repeat(1, 3, 1, 1).round().clamp(0, 255).to(torch.uint8)
    tot = {"grey28": 0.0, "rgb32": 0.0}
    for name in NAMES:
        row = []
        for key, imgs in (("grey28", x), ("rgb32", xc)):
            t = time.perf_counter()
            for s in range(1, 6):
                corrupt(name, imgs, s, range(n))
            dt = time.perf_counter() - t
            tot[key] += dt
            row.append(f"{key} {dt:6.2f}s")
        print(f"{name:18s} " + "  ".join(row), flush=True)
    print("total (15 x 5 severities, 1000 images):", {k: round(v, 1) for k, v in tot.items()})
elif what == "pgd":
    torch.manual_seed(0)
    m = bench.build_model("small_cnn", num_classes=10, shape=(1, 28, 28)).eval()
    x, y = fm.test_x[:200].float() / 255, fm.test_y[:200]
    for norm, eps in (("Linf", 0.1), ("L2", 1.5), ("L1", 10.0)):
        t = time.perf_counter()
        bench.attack("pgd", m, x, y, eps=eps, norm=norm, steps=20)
        print(f"pgd-20 {norm}: {time.perf_counter() - t:.2f}s / 200 images", flush=True)
    from bench.attacks.l1 import project_l1_box
    z = torch.rand(200, 1, 28, 28)
    t = time.perf_counter()
    for _ in range(20):
        project_l1_box(z + torch.randn_like(z), z, 10.0)
    print(f"L1 projection alone x20: {time.perf_counter() - t:.2f}s / 200 images", flush=True)
elif what == "aa":  # a small_cnn trained 150 Adam steps (clean ~0.86), 100 test images
    import torch.nn.functional as F

    torch.manual_seed(0)
    m = bench.build_model("small_cnn", num_classes=10, shape=(1, 28, 28))
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    t = time.perf_counter()
    for i in range(150):
        idx = torch.randint(0, 60000, (128,))
        loss = F.cross_entropy(m(fm.train_x[idx].float() / 255), fm.train_y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    x, y = fm.test_x[:100].float() / 255, fm.test_y[:100]
    print(f"trained 150 steps in {time.perf_counter()-t:.0f}s; clean acc {(m(x).argmax(1)==y).float().mean():.2f}", flush=True)
    for norm, eps, extra in (("L1", 10.0, {}), ("Linf", 0.1, {}), ("L1", 10.0, {"version": "custom", "attacks": ["apgd-ce", "apgd-t"]})):
        t = time.perf_counter()
        xa = bench.attack("autoattack", m, x, y, eps=eps, norm=norm, **extra)
        print(f"autoattack {extra.get('version', 'standard')} {norm} eps {eps}: {time.perf_counter() - t:.1f}s / 100 images, robust acc {(m(xa).argmax(1)==y).float().mean():.2f}", flush=True)
        t = time.perf_counter()
        xa = bench.attack("pgd", m, x, y, eps=eps, norm=norm, steps=20)
        print(f"  pgd-20 {norm}: {time.perf_counter() - t:.1f}s, robust acc {(m(xa).argmax(1)==y).float().mean():.2f}", flush=True)
elif what == "io":
    from fractions import Fraction

    from bench.data import cifar_c
    from bench.evaluation.external import load_external
    from bench.types import ThreatModel
    tmp = tempfile.TemporaryDirectory()
    d = Path(tmp.name) / "CIFAR-10-C"
    d.mkdir()
    np.save(d / "fog.npy", np.random.default_rng(0).integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8))
    np.save(d / "labels.npy", np.tile(np.arange(10, dtype=np.uint8), 5000))
    t = time.perf_counter()
    xs, ys = cifar_c.read("cifar10", "fog", 3, [d.parent])
    print(f"cifar_c.read one severity (10000 images from a 154 MB file): {time.perf_counter() - t:.2f}s", flush=True)
    clean = fm.test_x
    adv = (clean.float() / 255 + (torch.rand(clean.shape) * 0.2 - 0.1)).clamp(0, 1)
    p = d.parent / "advs.pt"
    torch.save(adv, p)
    t = time.perf_counter()
    load_external(p, clean, ThreatModel("Linf", Fraction(1, 10), "0.1"))
    print(f"load_external 10000 Fashion-MNIST images ({p.stat().st_size / 1e6:.0f} MB): {time.perf_counter() - t:.2f}s", flush=True)
    tmp.cleanup()
