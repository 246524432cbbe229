"""The dictionary models by name: build one, save and load it, and read its feature directions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cellconcepts.defaults import schema_default
from cellconcepts.dictionary.columns import unit_columns
from cellconcepts.dictionary.icfl import ICFL
from cellconcepts.dictionary.topk import TopKSAE
from cellconcepts.files import PathLike, atomic_path
from cellconcepts.variant import METHODS

# What `build_model` takes besides the shape and seed, per method: ICFL's L and the model's own
# keyword settings, all saved in the model's meta (`save_model`) and read back by `load_model`.
OPTIONS = {
    "icfl": (
        "atoms_per_iteration",
        "selection",
        "learn_b_pre",
        "resample_every",
        "resample_threshold",
    ),
    "topk": ("aux_k", "aux_coef", "learn_b_pre", "resample_every", "resample_threshold"),
}


def build_model(
    method: str,
    input_dim: int,
    n_features: int,
    sparsity: int,
    *,
    atoms_per_iteration: int = schema_default("dictionary.icfl.atoms_per_iteration"),
    seed: int = 0,
    **options: Any,
) -> ICFL | TopKSAE:
    """ICFL with J = sparsity // atoms_per_iteration iterations, or a TopK SAE with k = sparsity
    (``atoms_per_iteration`` is then unused). ``options`` are the model's own keyword settings
    (`OPTIONS`: `ICFL` and `TopKSAE`); those left out take the config schema's defaults."""
    if method == "icfl":
        if atoms_per_iteration < 1 or sparsity % atoms_per_iteration != 0:
            raise ValueError(
                f"icfl: sparsity ({sparsity}) must be a positive multiple of "
                f"atoms_per_iteration ({atoms_per_iteration})"
            )
        return ICFL(
            input_dim,
            n_features,
            sparsity // atoms_per_iteration,
            atoms_per_iteration,
            seed,
            **options,
        )
    if method == "topk":
        return TopKSAE(input_dim, n_features, sparsity, seed=seed, **options)
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


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
    if meta["method"] not in OPTIONS:
        raise ValueError(f"{path}: unknown method {meta['method']!r} in the model meta")
    # A setting missing from an older model's meta takes the schema's default.
    options = {k: meta[k] for k in OPTIONS[meta["method"]] if k in meta}
    model = build_model(
        meta["method"],
        meta["input_dim"],
        meta["n_features"],
        meta["sparsity"],
        seed=meta.get("seed", 0),
        **options,
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the model in its meta: {err}") from err
    return model.to(map_location), meta
