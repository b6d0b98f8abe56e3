"""Cache keys: sha256 of canonical JSON of everything that changes a result.

Train key: protocol version, dataset/model/defence (name, explicit version, all params with
defaults filled in), threat (eps as a reduced fraction), train spec, seed; the planner adds the
weight averagers the run records (``bench/plan/expand.py``). Excluded: device, paths, evaluation
settings, display names. Eval key: train key, which weights, attack (name, version,
params), threat and eval spec. Bump ``PROTOCOL_VERSION`` when the engine's semantics change.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bench.core.params import fraction_text, to_plain
from bench.types import ThreatModel

PROTOCOL_VERSION = 2  # 2: verified entries (ENTRY with sha256), averagers in the train key


def canonical_json(obj: Any) -> str:
    return json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def threat_plain(threat: ThreatModel) -> dict[str, str]:
    return {"norm": threat.norm, "eps": fraction_text(threat.eps)}


# Options added after caches existed: absent from a key at their default, so earlier keys stay valid.
# channels_last, compile and fuse_bn never change a result beyond float rounding (parity tests): never keyed.
UNKEYED_AT_DEFAULT = {"precision": "fp32", "cascade": False}  # a cascade is keyed by its "after" list (expand.py)
NEVER_KEYED = ("channels_last", "compile", "fuse_bn")


def options_plain(spec: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A train or eval spec as keyed: the fast-path options dropped where they change nothing (and ``drop``)."""
    plain = to_plain(spec)
    for name in (*NEVER_KEYED, *drop):
        plain.pop(name, None)
    for name, default in UNKEYED_AT_DEFAULT.items():
        if plain.get(name, default) == default:
            plain.pop(name, None)
    return plain


# What train.precision bf16 covers, keyed with it: the defence's loss, and since this was added the
# validation attacks, the logit gap's attack and the averagers' BN pass (bf16 keys made before are not reused).
BF16_TRAIN_SCOPE = "loss, validation, BN pass"


def train_spec(dataset: Any, model: Any, threat: ThreatModel, train: Any, defence: Any, seed: int) -> dict[str, Any]:
    plain = options_plain(train)
    if "precision" in plain:
        plain["precision_scope"] = BF16_TRAIN_SCOPE
    return {
        "protocol": PROTOCOL_VERSION,
        "dataset": dataset.plain(),
        "model": model.plain(),
        "threat": threat_plain(threat),
        "train": plain,
        "defence": defence.plain(),
        "seed": seed,
    }


def eval_spec(train_key: str, weights: dict[str, Any], attack: Any, threat: ThreatModel, evaluation: Any) -> dict[str, Any]:
    return {
        "protocol": PROTOCOL_VERSION,
        "train_key": train_key,
        "weights": weights,
        "attack": attack.plain(),
        "threat": threat_plain(threat),
        "eval": options_plain(evaluation, drop=("cascade",)),
    }


def column_spec(train_key: str, weights: dict[str, Any], column: Any, threat: ThreatModel, evaluation: Any) -> dict[str, Any]:
    """The key of a corruption or external column: no attack, so neither the attack options nor (for a
    corruption) the threat; the test examples it runs on. An external file is checked in the threat's ball."""
    spec = {"protocol": PROTOCOL_VERSION, "train_key": train_key, "weights": weights, **column.plain()}
    if column.kind == "external":
        spec["threat"] = threat_plain(threat)
    return {**spec, "eval": {"n_examples": evaluation.n_examples, "subset_seed": evaluation.subset_seed}}
