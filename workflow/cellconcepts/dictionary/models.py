"""The dictionary models by name: build one, save and load it, and read its feature directions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellconcepts.dictionary.columns import unit_columns
from cellconcepts.dictionary.icfl import ICFL
from cellconcepts.dictionary.settings import MethodSettings, from_meta, with_options
from cellconcepts.dictionary.topk import TopKSAE
from cellconcepts.files import PathLike, atomic_path
from cellconcepts.variant import METHODS


def build_model(
    method: str,
    input_dim: int,
    n_features: int,
    sparsity: int,
    *,
    seed: int = 0,
    settings: MethodSettings | None = None,
    **options: Any,
) -> ICFL | TopKSAE:
    """ICFL with J = sparsity // L iterations of L = ``atoms_per_iteration`` atoms, or a TopK
    SAE with k = sparsity. ``settings``: the method's settings object (`dictionary.settings`);
    without it, the config schema's with ``options`` changed (e.g. ``atoms_per_iteration=2``)."""
    if settings is None:
        settings = with_options(method, **options)
    elif options:
        raise TypeError(f"build_model: give settings or options, not both ({sorted(options)})")
    if settings.method != method:
        raise ValueError(f"build_model: {type(settings).__name__} given for method {method!r}")
    if method == "icfl":
        return ICFL(input_dim, n_features, sparsity, settings, seed)
    return TopKSAE(input_dim, n_features, sparsity, settings, seed)


def decoder_directions(model: nn.Module) -> np.ndarray:
    """Decoder columns as a (d, M) float64 array with unit-norm columns."""
    W = model.W_dec.detach().cpu().to(torch.float64)
    return unit_columns(W).numpy()


def _plain(value: Any) -> Any:
    """Meta values as plain Python types, so checkpoints load with ``weights_only=True``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def save_model(model: nn.Module, path: PathLike, meta: dict[str, Any]) -> None:
    """Save weights and meta (caller's meta, overridden by the model's own constructor
    arguments) to ``path``, written under a temporary name then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": _plain({**dict(meta), **model.config()}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(
    path: PathLike, map_location: str | torch.device = "cpu"
) -> tuple[ICFL | TopKSAE, dict[str, Any]]:
    """Load a model written by :func:`save_model`; returns (model, meta)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated or foreign: torch's advice (weights_only=False) is unsafe
        raise ValueError(
            f"{path}: not a readable model file of this workflow ({type(err).__name__}); "
            "delete it to retrain"
        ) from err
    if not isinstance(payload, dict) or not {"state_dict", "meta"} <= set(payload):
        raise ValueError(f"{path}: not a model file (expected keys 'state_dict' and 'meta')")
    meta = payload["meta"]
    missing = [k for k in ("method", "input_dim", "n_features", "sparsity") if k not in meta]
    if missing:
        raise ValueError(f"{path}: model meta lacks {missing}")
    if meta["method"] not in METHODS:
        raise ValueError(f"{path}: unknown method {meta['method']!r} in the model meta")
    model = build_model(
        meta["method"],
        meta["input_dim"],
        meta["n_features"],
        meta["sparsity"],
        seed=meta.get("seed", 0),
        settings=from_meta(meta["method"], meta),
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the model in its meta: {err}") from err
    return model.to(map_location), meta
