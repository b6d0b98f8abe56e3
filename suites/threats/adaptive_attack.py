"""Your own attack, as an external column of suites/threats/fashion-mnist.yaml (README "Corruptions, L1 and your own attack").

    python suites/threats/adaptive_attack.py [--cache-dir DIR] [--limit N] [--set KEY=VALUE ...]

(the options of the ``bench run`` whose models it attacks).

For each model the suite trained (``bench run`` first), an attack tuned beyond the suite's PGD-20: L1 PGD on
the margin loss (the gap between the best wrong logit and the true one), 2 runs of 50 steps (from the clean
image, then from a random start), a step size decaying from eps/2 to eps/50, larger sparse steps (the top 2 %
of coordinates), and per image the example of the highest margin over every step of both runs (the sparse step and the exact L1-and-box projection are bench's own, ``bench.attacks.l1``).
Its adversarial examples go where the suite's ``external`` column reads them (``adaptive/<row>-seed<seed>.pt``,
beside the suite file), as ``{"ids": test ids, "x_adv": images in [0, 1]}``; the next ``bench run``
checks them (shape, range, the L1 ball), evaluates them and puts them in the worst case. Replace
``attack`` with yours: whatever it is, the file is checked the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import bench
from bench.attacks.l1 import project_l1_box, random_start, sparse_direction

SUITE = Path(__file__).with_name("fashion-mnist.yaml")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Best other logit minus the true one: > 0 means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.max(1).values - true


def attack(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, restarts: int = 2, steps: int = 50
) -> torch.Tensor:
    """Per image, the highest-margin point found by ``restarts`` runs of L1 PGD on the margin loss."""
    best, best_margin = x.clone(), torch.full((len(x),), float("-inf"))
    for r in range(restarts):
        torch.manual_seed(r)
        x_adv = random_start(x, eps) if r else x.clone()  # the first run starts from the clean image
        for t in range(steps + 1):
            x_adv.requires_grad_(True)
            m = margin(model(x_adv), y)
            better = m.detach() > best_margin  # the point the gradient is taken at, judged by the same forward
            best[better], best_margin[better] = x_adv.detach()[better], m.detach()[better]
            if t == steps:
                break
            (grad,) = torch.autograd.grad(m.sum(), x_adv)
            step = eps / 2 * (1 - t / steps) + eps / 50 * t / steps
            x_adv = project_l1_box(x_adv.detach() + step * sparse_direction(grad, x_adv.detach(), top=0.02), x, eps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="the cache `bench run` used (default: bench's)")
    parser.add_argument("--limit", type=int, default=None, help="as `bench run --limit`")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as `bench run --set`")
    args = parser.parse_args()
    done = 0
    for m in bench.trained_models(SUITE, cache_dir=args.cache_dir, device="cpu", limit=args.limit, overrides=args.set):
        model = m.model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x_adv = attack(model, m.x, m.y, m.threat.eps_float)
        with torch.no_grad():
            acc = (model(x_adv).argmax(1) == m.y).float().mean().item()
        path = m.external_file("adaptive")
        torch.save({"ids": m.ids, "x_adv": x_adv.cpu()}, path)
        print(f"{m.row} seed {m.seed}: accuracy under the attack {100 * acc:.1f}% -> {path}")
        done += 1
    if not done:
        raise SystemExit(f"no trained model in the cache: run `bench run {SUITE}` first")


if __name__ == "__main__":
    main()
