"""bench: train adversarial-robustness defences and compare them across attacks.

Library API (the CLI is a thin layer over it)::

    import bench
    suite = bench.load_suite("suites/quickstart.yaml", overrides={"train.epochs": 2})  # as `--set`
    summary = bench.run_suite(suite, cache_dir=".cache/bench", results_dir="results", device="cpu")
    model = bench.build_model("small_cnn", num_classes=10, shape=(1, 28, 28))
    x_adv = bench.attack("pgd", model, x, y, eps="8/255", steps=20)
    result = bench.evaluate(my_model, dataset="fashion-mnist", attacks=["fgsm", "pgd"], eps=0.1)
"""

__version__ = "0.1.0"

import defenses as _defenses  # noqa: E402,F401  (registers the built-in defences)
from bench.attacks import attack  # noqa: E402
from bench.config import Suite, load_suite  # noqa: E402
from bench.errors import BenchError, ConfigError, DatasetMissingError, EvaluationError  # noqa: E402
from bench.models import build_model  # noqa: E402
from bench.own import Evaluation, evaluate  # noqa: E402
from bench.plan import expand  # noqa: E402
from bench.registry import ATTACKS, DATASETS, DEFENCES, MODELS  # noqa: E402
from bench.runner import RunSummary, run_suite  # noqa: E402

__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENCES",
    "MODELS",
    "BenchError",
    "ConfigError",
    "DatasetMissingError",
    "Evaluation",
    "EvaluationError",
    "RunSummary",
    "Suite",
    "attack",
    "build_model",
    "evaluate",
    "expand",
    "load_suite",
    "run_suite",
]
