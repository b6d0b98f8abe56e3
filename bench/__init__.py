"""bench: train adversarial-robustness defences and compare them across attacks.

Library API (the CLI is a thin layer over it)::

    import bench
    suite = bench.load_suite("suites/quickstart.yaml", overrides={"train.epochs": 2})  # as `--set`
    summary = bench.run_suite(suite, cache_dir=".cache/bench", results_dir="results", device="cpu")
    model = bench.build_model("small_cnn", num_classes=10, shape=(1, 28, 28))
    x_adv = bench.attack("pgd", model, x, y, eps="8/255", steps=20)
    result = bench.evaluate(my_model, dataset="fashion-mnist", attacks=["fgsm", "pgd"], eps=0.1)
    for m in bench.trained_models(suite): ...  # a suite's trained models, for your own attack (an external column)
"""

import defenses as _defenses  # noqa: F401  (registers the built-in defences)
from bench.api.evaluate import Evaluation, evaluate
from bench.api.run import RunSummary, run_suite
from bench.api.trained import TrainedModel, trained_models
from bench.attacks import attack
from bench.core.errors import BenchError, ConfigError, DatasetMissingError, EvaluationError
from bench.core.version import __version__ as __version__
from bench.models import build_model
from bench.plan.expand import expand
from bench.registry import ATTACKS, DATASETS, DEFENCES, MODELS
from bench.suite.load import load_suite
from bench.suite.specs import Suite

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
    "TrainedModel",
    "attack",
    "build_model",
    "evaluate",
    "expand",
    "load_suite",
    "run_suite",
    "trained_models",
]
