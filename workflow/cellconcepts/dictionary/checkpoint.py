"""Resumable training state on disk, one mechanism for the dictionaries and the MAE.

A checkpoint holds whatever state a trainer needs to continue bit-identically, plus the
*signature* of the run that wrote it: the settings and inputs that must agree for a resume to
be exact. Loading gives the state back only when the signature matches; a checkpoint written
with other settings is left alone and training starts over (with a warning that names what
changed), and one that cannot be read is moved aside as ``<name>.corrupt-<time>`` (logged with
its path) so that the next run is not stuck on it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cellconcepts.files import PathLike, atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"


def encode_signature(signature: Mapping[str, Any]) -> str:
    """The signature as sorted JSON, the form stored in a checkpoint."""
    return json.dumps(dict(signature), sort_keys=True, default=str)


def save_checkpoint(path: PathLike, state: Mapping[str, Any], signature: Mapping[str, Any]) -> None:
    """Write ``state`` (tensors and plain Python values only) with the run's signature,
    atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**state, "signature": encode_signature(signature)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: PathLike, signature: Mapping[str, Any], device: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The saved state if ``path`` exists and was written by a run with this signature, else
    None (see the module docstring for what happens to the file)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("signature"), str):
            raise ValueError("not a checkpoint of this workflow (no signature)")
    except Exception as err:  # a truncated or foreign file: keep it for inspection, start over
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        # torch's own message advises weights_only=False, which would run arbitrary code.
        log.warning(
            "%s: not a readable checkpoint of this workflow (%s); moved to %s, training starts "
            "over",
            path,
            type(err).__name__,
            aside,
        )
        return None
    expected = encode_signature(signature)
    if state["signature"] != expected:
        old, new = json.loads(state["signature"]), json.loads(expected)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        log.warning(
            "%s: written with other settings (%s); training starts over", path, ", ".join(changed)
        )
        return None
    return state
