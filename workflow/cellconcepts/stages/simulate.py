"""Stages of workflow/rules/simulate.smk: the demo's data with known ground truth."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from cellconcepts.files import PathLike
from cellconcepts.sources import cellpainting, superposition
from cellconcepts.store.layout import ImageFiles, TokenFiles
from cellconcepts.store.tokens import write_token_store

log = logging.getLogger(__name__)


def simulate_superposition(
    *,
    tokens: PathLike,
    obs: PathLike,
    atoms: PathLike,
    atom_table: PathLike,
    nuisance: PathLike,
    simulation: Mapping[str, Any],
) -> None:
    """Synthetic superposition embeddings -> token store + the true dictionary."""
    data = superposition.simulate_superposition(**simulation)
    write_token_store(TokenFiles(tokens, obs), data.tokens, data.obs)
    superposition.write_ground_truth(data, atoms=atoms, atom_table=atom_table, nuisance=nuisance)
    log.info("simulated %d tokens of dimension %d, %d atoms", *data.tokens.shape, len(data.atoms))


def simulate_cellpainting(
    *,
    images: PathLike,
    image_obs: PathLike,
    masks: PathLike,
    cells: PathLike,
    groups: PathLike,
    simulation: Mapping[str, Any],
) -> None:
    """A simulated Cell Painting knock-out screen with per-cell ground truth."""
    screen = cellpainting.simulate_screen(**simulation)
    cellpainting.write_screen(screen, ImageFiles(images, image_obs, masks, cells, groups))
    log.info(
        "simulated %d images %s, %d cells (%d perturbed), %d genes",
        len(screen.images),
        screen.images.shape[1:],
        len(screen.cells),
        int(screen.cells["perturbed"].sum()),
        screen.obs["gene"].nunique(),
    )
