"""File names of the stores the stages exchange: the one place they are defined.

The results layout (`cellconcepts.layout`) builds the rules' paths from these names, and a store
opened from a directory finds its files here. Stages themselves are given file paths, never folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cellconcepts.files import PathLike

# Token store: the contract between the stages (`store.tokens`).
TOKENS = "tokens.npy"
TOKEN_OBS = "obs.parquet"

# Image store: images with one obs row per image; simulated screens add their ground truth.
IMAGES = "images.npy"
IMAGE_OBS = "obs.parquet"
MASKS = "masks.npy"
CELLS = "cells.parquet"
GROUPS = "groups.csv"

# Ground truth of the synthetic superposition data.
ATOMS = "atoms.npy"
ATOM_TABLE = "atom_table.csv"
NUISANCE = "nuisance.npy"
TRUE_CODES = "codes.npz"

# An encoder saved Hugging Face style (microscopy); its config.json names this model type.
ENCODER_CONFIG = "config.json"
ENCODER_WEIGHTS = "model.safetensors"
ENCODER_MODEL_TYPE = "cellconcepts-vit"


@dataclass(frozen=True)
class TokenFiles:
    """The two files of a token store: tokens (n, d) and their obs table."""

    tokens: Path
    obs: Path

    def __post_init__(self) -> None:
        _as_paths(self)

    @classmethod
    def of(cls, store: TokenFiles | PathLike) -> TokenFiles:
        """Files given as they are, or the standard names inside a store directory."""
        if isinstance(store, TokenFiles):
            return store
        folder = Path(store)
        return cls(folder / TOKENS, folder / TOKEN_OBS)


@dataclass(frozen=True)
class ImageFiles:
    """The files of an image store; masks, cells and groups exist for simulated screens."""

    images: Path
    obs: Path
    masks: Path | None = None
    cells: Path | None = None
    groups: Path | None = None

    def __post_init__(self) -> None:
        _as_paths(self)

    @classmethod
    def of(cls, store: ImageFiles | PathLike) -> ImageFiles:
        """Files given as they are, or a store directory's files (the optional ones where
        present)."""
        if isinstance(store, ImageFiles):
            return store
        folder = Path(store)
        optional = {
            key: folder / name if (folder / name).is_file() else None
            for key, name in (("masks", MASKS), ("cells", CELLS), ("groups", GROUPS))
        }
        return cls(folder / IMAGES, folder / IMAGE_OBS, **optional)


def _as_paths(files: TokenFiles | ImageFiles) -> None:
    """Accept str or Path for every file (None stays None)."""
    for name, value in vars(files).items():
        if value is not None:
            object.__setattr__(files, name, Path(value))
