"""Image stores: the one reader of ``images.npy`` (n, C, H, W; memory-mapped) and its obs table
(one row per image, with a unique ``image_id``); simulated screens add per-cell masks, the cell
table (which cells were truly perturbed) and the planted groups. Light on imports: CellProfiler's
environment reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellconcepts.files import load_npy
from cellconcepts.store.layout import ImageFiles, PathLike


@dataclass
class ImageStore:
    """Images (memory-mapped) with their annotations; masks/cells/groups only where given."""

    images: np.ndarray
    obs: pd.DataFrame
    masks: np.ndarray | None = None
    cells: pd.DataFrame | None = None
    groups: pd.DataFrame | None = None


def read_groups(path: PathLike) -> pd.DataFrame:
    """The planted gene groups of a simulated screen (gene_group, go_term, channel, genes,
    n_genes); empty strings stay strings (the no-effect group has no channel)."""
    return pd.read_csv(path, keep_default_na=False)


def open_image_store(store: ImageFiles | PathLike) -> ImageStore:
    """Open an image store (its files, or the directory holding them), checking that images,
    obs and masks agree."""
    files = ImageFiles.of(store)
    for required in (files.images, files.obs):
        if not required.exists():
            raise FileNotFoundError(
                f"{required}: missing; an image store needs images (n, C, H, W) and an obs "
                "table (one row per image)"
            )
    images = load_npy(files.images, mmap_mode="r")
    if images.ndim != 4:
        raise ValueError(f"{files.images}: expected shape (n, C, H, W), got {images.shape}")
    table = pd.read_parquet(files.obs)
    if len(table) != len(images):
        raise ValueError(
            f"{files.obs}: {len(table)} rows but {files.images} holds {len(images)} images"
        )
    if "image_id" not in table.columns:
        raise ValueError(f"{files.obs}: expected an 'image_id' column")
    duplicated = table["image_id"][table["image_id"].duplicated()]
    if len(duplicated):
        raise ValueError(
            f"{files.obs}: image_id must be unique; repeated: {duplicated.head(5).tolist()}"
        )
    masks = load_npy(files.masks, mmap_mode="r") if files.masks is not None else None
    if masks is not None and masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"{files.masks}: expected shape {(images.shape[0], *images.shape[2:])} to match "
            f"the images, got {masks.shape}"
        )
    cells = pd.read_parquet(files.cells) if files.cells is not None else None
    groups = read_groups(files.groups) if files.groups is not None else None
    return ImageStore(images, table, masks, cells, groups)
