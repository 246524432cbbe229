"""Image stores: ``images.npy`` (n, C, H, W; memory-mapped) and ``obs.parquet`` (one row per
image, with a unique ``image_id``); simulated screens add ``masks.npy`` (per-cell labels),
``cells.parquet`` and ``groups.csv``. Light on imports: CellProfiler's environment reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PathLike = str | Path


@dataclass
class ImageStore:
    """Images (memory-mapped) with their annotations; masks/cells only for simulated screens."""

    images: np.ndarray
    obs: pd.DataFrame
    masks: np.ndarray | None = None
    cells: pd.DataFrame | None = None
    groups: pd.DataFrame | None = None


def open_image_store(path: PathLike) -> ImageStore:
    """Open an image store directory, checking that images and obs agree."""
    path = Path(path)
    images_path, obs_path = path / "images.npy", path / "obs.parquet"
    for required in (images_path, obs_path):
        if not required.exists():
            raise FileNotFoundError(
                f"{required}: missing; an image store needs images.npy (n, C, H, W) and "
                "obs.parquet (one row per image)"
            )
    images = np.load(images_path, mmap_mode="r")
    if images.ndim != 4:
        raise ValueError(f"{images_path}: expected shape (n, C, H, W), got {images.shape}")
    table = pd.read_parquet(obs_path)
    if len(table) != len(images):
        raise ValueError(
            f"{obs_path}: {len(table)} rows but {images_path} holds {len(images)} images"
        )
    if "image_id" not in table.columns:
        raise ValueError(f"{obs_path}: expected an 'image_id' column")
    duplicated = table["image_id"][table["image_id"].duplicated()]
    if len(duplicated):
        raise ValueError(
            f"{obs_path}: image_id must be unique; repeated: {duplicated.head(5).tolist()}"
        )
    masks = np.load(path / "masks.npy", mmap_mode="r") if (path / "masks.npy").exists() else None
    cells = pd.read_parquet(path / "cells.parquet") if (path / "cells.parquet").exists() else None
    groups = pd.read_csv(path / "groups.csv") if (path / "groups.csv").exists() else None
    return ImageStore(images, table, masks, cells, groups)
