"""Resumable training state on disk, one mechanism for the dictionaries and the MAE.

A checkpoint holds whatever state a trainer needs to continue bit-identically, plus the
*signature* of the run that wrote it: the settings and inputs that must agree for a resume to
be exact. Loading gives the state back only when the signature matches; a checkpoint written
with other settings is left alone and training starts over (with a warning that names what
changed), and one that cannot be read is moved aside as ``<name>.corrupt-<time>`` (logged with
its path) so that the next run is not stuck on it: training then resumes from the previous
checkpoint (kept as ``<stem>.previous<suffix>`` each time a new one is written), or starts over.
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


def previous_path(path: PathLike) -> Path:
    """Where the checkpoint before the last one is kept."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(path: PathLike, state: Mapping[str, Any], signature: Mapping[str, Any]) -> None:
    """Write ``state`` (tensors and plain Python values only) with the run's signature,
    atomically; the checkpoint it replaces is kept as the previous one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**state, "signature": encode_signature(signature)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        if path.exists():
            os.replace(path, previous_path(path))


def load_checkpoint(
    path: PathLike, signature: Mapping[str, Any], device: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The saved state if ``path`` (or, when it is unreadable, the previous checkpoint) was
    written by a run with this signature, else None (see the module docstring)."""
    path = Path(path)
    for candidate in (path, previous_path(path)):
        state = _load(candidate, device)
        if state is None:
            continue
        if candidate != path:
            log.warning("%s: resuming from the previous checkpoint %s", path, candidate)
        expected = encode_signature(signature)
        if state["signature"] != expected:
            old, new = json.loads(state["signature"]), json.loads(expected)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            log.warning(
                "%s: written with other settings (%s); training starts over",
                candidate,
                ", ".join(changed),
            )
            return None
        return state
    return None


def _load(path: Path, device: str | torch.device) -> dict[str, Any] | None:
    """A checkpoint file's content; None when it does not exist or cannot be read (then it is
    moved aside)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("signature"), str):
            raise ValueError("not a checkpoint of this workflow (no signature)")
    except Exception as err:  # a truncated or foreign file: keep it for inspection
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        # torch's own message advises weights_only=False, which would run arbitrary code.
        log.warning(
            "%s: not a readable checkpoint of this workflow (%s); moved to %s",
            path,
            type(err).__name__,
            aside,
        )
        return None
    return state
