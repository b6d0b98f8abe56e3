"""Your own weights: read a ``.pt`` safely, fit it to a model and a dataset, name it by its content.

* :func:`read_state_dict` loads with ``torch.load(weights_only=True)`` (a pickle that would run code
  is refused) and accepts a raw ``state_dict`` or one under ``state_dict`` / ``model_state_dict`` /
  ``model`` / ``net``, with ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefixes.
* :func:`load_checkpoint` builds the registered model for the dataset and loads the weights, the
  whole classifier's or the network's alone (the normalisation layer then comes from the model's
  params); a wrong class count or tensor shape is one line naming the file and the field.
* :func:`module_digest` names a set of weights by content: the model's class name, its module tree
  (``repr``: layer types and hyper-parameters) and the bytes of its ``state_dict``. A ``checkpoints:``
  row and ``bench.evaluate`` of the same model therefore share their cache entries, and re-saving a
  file with other weights re-evaluates it. Code outside the module tree (``forward``) is not part
  of the name: give a changed model another class name, or change its weights.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.errors import BenchError, ConfigError, show
from bench.data import load_dataset
from bench.models import build
from bench.types import DatasetInfo

LAYOUT_KEYS = ("state_dict", "model_state_dict", "model", "net")
PREFIXES = ("module.", "_orig_mod.")


def dataset_info(ref: Any, data_dir: str | None = None) -> DatasetInfo:
    """Classes, shape, mean and std of a dataset (PluginRef): static for the built-in file datasets,
    else from a plug-in's ``info=`` capability, else from the data itself."""
    from bench.registry import DATASETS

    info = DATASETS.get(ref.name).info
    if isinstance(info, DatasetInfo):
        return info
    return info(ref.params) if info else load_dataset(ref.name, ref.params, data_dir).info


def _first_line(e: BaseException) -> str:
    text = str(e)
    # torch's weights_only refusal names the global it would not import, below paragraphs of advice
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    return f"it would import {found.group(1)}" if found else (text.strip().splitlines() or [type(e).__name__])[0][:200]


def _unpickling_problem(e: BaseException) -> str:
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
    return found.group(1).strip()[:200] if found else _first_line(e)


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and all(
        isinstance(v, torch.Tensor) for v in obj.values()
    )


def read_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (a regular file: the caller checks), loaded on the CPU with ``weights_only=True``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not re.search(r"GLOBAL", str(e), re.IGNORECASE):  # not a refused import: not a checkpoint at all
            raise ConfigError(where, f"{path} is not a readable torch checkpoint (UnpicklingError: {_unpickling_problem(e)})") from None
        raise ConfigError(
            where, f"{path} is not a weights-only checkpoint, refused by torch.load(weights_only=True) ({_first_line(e)}); "
            "save it with torch.save(model.state_dict(), path)",
        ) from None  # fmt: skip
    except FileNotFoundError:
        raise ConfigError(where, f"file not found: {path}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(where, f"{path} is not a readable torch checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if not _is_state(obj) and isinstance(obj, dict):
        obj = next((obj[k] for k in LAYOUT_KEYS if _is_state(obj.get(k))), obj)
    if not _is_state(obj):
        kind = f"a mapping with keys {show(sorted(map(str, obj))[:6])}" if isinstance(obj, dict) else type(obj).__name__
        raise ConfigError(where, f"{path} holds {kind}, not a state_dict (tensors by name, or one under {', '.join(LAYOUT_KEYS)})")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def _fit(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The checkpoint's tensors named as the built classifier's: the whole classifier, or its network alone."""
    if set(state) == set(target):
        return state
    net = {f"net.{k}": v for k, v in state.items()}
    rest = {k: v for k, v in target.items() if not k.startswith("net.")}
    return {**rest, **net} if set(net) | set(rest) == set(target) and not set(net) & set(rest) else None


def _keys_problem(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> str:
    net = {k.removeprefix("net.") for k in target if k.startswith("net.")}
    names = set(target) if len(set(state) & set(target)) >= len(set(state) & net) else net
    missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
    parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})" for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    return "; ".join(parts)


def load_checkpoint(path: Path, model: Any, info: DatasetInfo, where: str) -> nn.Module:
    """The registered ``model`` (PluginRef) for ``info``'s dataset with the weights of ``path`` (CPU, eval mode)."""
    state = read_state_dict(path, where)
    built = build(model.name, model.params, info.num_classes, info.shape, info.mean, info.std)
    target = built.state_dict()
    fitted = _fit(state, target)
    if fitted is None:
        raise ConfigError(where, f"{path}: its tensors do not fit {model.name}: {_keys_problem(state, target)}")
    mismatched = [k for k in target if tuple(fitted[k].shape) != tuple(target[k].shape)]
    for key in mismatched:
        got, want = tuple(fitted[key].shape), tuple(target[key].shape)
        if want and want[0] == info.num_classes and got[1:] == want[1:]:  # the output layer
            raise ConfigError(where, f"{path} has {got[0]} classes ({key} {got}), the dataset {info.name} has {info.num_classes}")
    if mismatched:
        key = mismatched[0]
        raise ConfigError(
            where, f"{path}: {key} has shape {tuple(fitted[key].shape)}, {model.name} on {info.name} {info.shape} "
            f"needs {tuple(target[key].shape)} (another model or model params?)",
        )  # fmt: skip
    try:
        built.load_state_dict(fitted)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied
        raise ConfigError(where, f"{path}: cannot load into {model.name}: {_first_line(e)}") from None
    return built.eval()


def module_digest(model: nn.Module) -> str:
    """sha256 of the model's class name, module tree and ``state_dict`` bytes (names, dtypes, shapes, values)."""
    h = hashlib.sha256()
    tree = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model))  # no memory addresses from a custom extra_repr
    h.update(f"{type(model).__qualname__}\0{tree}\0".encode())
    for name, value in model.state_dict().items():
        h.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(value.shape)}\0".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        else:  # extra state
            h.update(repr(value).encode())
    return h.hexdigest()


_DIGESTS: dict[tuple, str] = {}


def checkpoint_digest(path: Path, model: Any, dataset: Any, where: str) -> str:
    """The content name of a ``checkpoints:`` row's weights (checked on the way; memoised per file state)."""
    info = dataset_info(dataset)
    try:
        stat = path.stat()
        memo = (str(path), stat.st_size, stat.st_mtime_ns, repr(model), info)
    except OSError:
        memo = None
    if memo is None or memo not in _DIGESTS:
        digest = module_digest(load_checkpoint(path, model, info, where))
        if memo is None:
            return digest
        _DIGESTS[memo] = digest
    return _DIGESTS[memo]


def load_row(row: Any, info: DatasetInfo, device: torch.device) -> nn.Module:
    """The model of a ``checkpoints:`` row (CheckpointSpec), refused if the file changed since planning."""
    if row.path is None:
        raise BenchError(f"checkpoints row {row.name}: its model lives only in the process that planned it (bench.evaluate)")
    model = load_checkpoint(row.path, row.model, info, f"checkpoints row {row.name}")
    if module_digest(model) != row.digest:
        raise BenchError(f"{row.path}: changed since the suite was planned (checkpoints row {row.name}); run it again")
    return model.to(device)
