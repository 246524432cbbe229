"""Public API of the Cell Painting screen simulator: simulate a screen, build its ground-truth
tables and write it to an image store.

Everything is seeded; no global RNG is used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellconcepts.files import atomic_path
from cellconcepts.sources.cellpainting.design import (
    CONTROL_GENE,
    PlantedGroup,
    _cell_types,
    _check_parameters,
    _choose_genes,
    _gene_table,
    _make_plate,
    _Plate,
    _plate_design,
    _resolve_groups,
    _well_contents,
    _well_pool,
)
from cellconcepts.sources.cellpainting.render import _render_design
from cellconcepts.store import layout
from cellconcepts.store.gene_sets import go_bp_2023_path, read_gmt
from cellconcepts.store.layout import ImageFiles, PathLike

log = logging.getLogger(__name__)

OBS_COLUMNS = [
    "image_id",
    "plate",
    "well",
    "site",
    "cell_type",
    "batch",
    "gene",
    "gene_group",
    "go_term",
    "strong_perturbation",
    "is_control",
    "strength",
    "penetrance",
    "n_cells",
    "n_perturbed",
]
CELLS_COLUMNS = [
    "image_id",
    "image_index",
    "cell_label",
    "perturbed",
    "area",
    "centroid_y",
    "centroid_x",
]
GROUPS_COLUMNS = ["gene_group", "go_term", "channel", "genes", "n_genes"]


@dataclass
class SimulatedScreen:
    """Images with their per-image, per-cell and per-group ground truth."""

    images: np.ndarray  # uint16 (n, 6, H, W)
    masks: np.ndarray  # int32 (n, H, W), 0 = background, per-image cell labels 1..n_cells
    obs: pd.DataFrame  # one row per image (OBS_COLUMNS)
    cells: pd.DataFrame  # one row per cell (CELLS_COLUMNS)
    groups: pd.DataFrame  # one row per planted group (GROUPS_COLUMNS)


def simulate_screen(
    *,
    n_cell_types: int = 3,
    plates_per_cell_type: int = 2,
    genes_per_group: int = 5,
    n_no_effect_genes: int = 4,
    control_wells: int = 8,
    sites_per_well: int = 8,
    image_size: int = 64,
    groups: Sequence[str] | Mapping[str, str | None] | None = None,
    effect_scale: float = 1.0,
    n_strong: int = 5,
    gene_sets_path: PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SimulatedScreen:
    """Simulate a knock-out Cell Painting screen; deterministic given ``seed``.

    ``groups``: effect names to plant (default all of ``DEFAULT_GROUPS``), or a mapping
    effect -> GO term name overriding the default term. ``gene_sets_path``: GMT file the genes
    are drawn from (default GO BP 2023 from pyenrichr). The ``n_strong`` planted genes with the
    highest strength x penetrance are labelled in ``obs.strong_perturbation``.
    """
    _check_parameters(
        n_cell_types=n_cell_types,
        plates_per_cell_type=plates_per_cell_type,
        genes_per_group=genes_per_group,
        n_no_effect_genes=n_no_effect_genes,
        control_wells=control_wells,
        sites_per_well=sites_per_well,
        image_size=image_size,
        n_strong=n_strong,
        effect_scale=effect_scale,
    )
    # Independent streams for the design, the plates, the images and the textures; within each
    # stream the draws happen in the order of the calls below (keep it: it fixes the screen).
    design_seq, plate_seq, image_seq, texture_seq = np.random.SeedSequence(seed).spawn(4)
    design_rng = np.random.default_rng(design_seq)
    planted = _resolve_groups(groups)
    source = Path(gene_sets_path) if gene_sets_path is not None else go_bp_2023_path()
    gene_sets = read_gmt(source)
    chosen, no_effect = _choose_genes(
        gene_sets, planted, genes_per_group, n_no_effect_genes, source, design_rng
    )
    genes = _gene_table(planted, chosen, no_effect, effect_scale, n_strong, design_rng)
    well_contents = _well_contents(genes, control_wells)
    pool = _well_pool(len(well_contents))

    plate_rng = np.random.default_rng(plate_seq)
    cell_types = _cell_types(n_cell_types, design_rng)
    plates = [
        _make_plate(f"P{t * plates_per_cell_type + p + 1:02d}", cell_type, image_size, plate_rng)
        for t, cell_type in enumerate(cell_types)
        for p in range(plates_per_cell_type)
    ]
    design = _plate_design(plates, well_contents, pool, sites_per_well, plate_rng)
    plate_by_id = {p.plate_id: p for p in plates}
    images, masks, flags = _render_design(
        design, plate_by_id, image_size, texture_seq, image_seq, progress
    )

    obs = _obs_table(design, plate_by_id, flags)
    cells = _cells_table(obs["image_id"].to_numpy(), masks, flags)
    groups_table = _groups_table(planted, chosen)
    log.info(
        "simulated %d images on %d plates: %d cells, %d perturbed",
        len(design),
        len(plates),
        len(cells),
        int(cells["perturbed"].sum()),
    )
    return SimulatedScreen(images, masks, obs, cells, groups_table)


def _obs_table(
    design: pd.DataFrame, plates: dict[str, _Plate], flags: list[np.ndarray]
) -> pd.DataFrame:
    """One row per image, in OBS_COLUMNS order."""
    obs = pd.DataFrame(
        {
            "image_id": design["plate"] + "_" + design["well"] + "_s" + design["site"].astype(str),
            "plate": design["plate"],
            "well": design["well"],
            "site": design["site"].astype(np.int64),
            "cell_type": [plates[p].cell_type.name for p in design["plate"]],
            "batch": design["plate"],
            "gene": design["gene"],
            "gene_group": design["gene_group"],
            "go_term": design["go_term"].astype(object),
            "strong_perturbation": design["strong_perturbation"].astype(object),
            "is_control": (design["gene"] == CONTROL_GENE).to_numpy(),
            "strength": design["strength"].astype(np.float64),
            "penetrance": design["penetrance"].astype(np.float64),
            "n_cells": np.array([len(f) for f in flags], dtype=np.int64),
            "n_perturbed": np.array([int(f.sum()) for f in flags], dtype=np.int64),
        }
    )
    for column in ("go_term", "strong_perturbation"):
        obs[column] = obs[column].where(obs[column].notna(), None)
    return obs


def _cells_table(image_ids: np.ndarray, masks: np.ndarray, flags: list[np.ndarray]) -> pd.DataFrame:
    """One row per cell: its image, label, ground-truth perturbation, area and centroid."""
    size = masks.shape[1]
    yy, xx = np.mgrid[0:size, 0:size]
    parts = []
    for index, (mask, perturbed) in enumerate(zip(masks, flags, strict=True)):
        n = len(perturbed)
        area = np.bincount(mask.ravel(), minlength=n + 1)[1:]
        cy = np.bincount(mask.ravel(), weights=yy.ravel(), minlength=n + 1)[1:] / area
        cx = np.bincount(mask.ravel(), weights=xx.ravel(), minlength=n + 1)[1:] / area
        parts.append((np.full(n, index), np.arange(1, n + 1), perturbed, area, cy, cx))
    columns = [np.concatenate(c) for c in zip(*parts, strict=True)]
    image_index = columns[0].astype(np.int64)
    return pd.DataFrame(
        {
            "image_id": image_ids[image_index].astype(object),
            "image_index": image_index,
            "cell_label": columns[1].astype(np.int32),
            "perturbed": columns[2].astype(bool),
            "area": columns[3].astype(np.int64),
            "centroid_y": columns[4].astype(np.float64),
            "centroid_x": columns[5].astype(np.float64),
        }
    )


def _groups_table(planted: list[PlantedGroup], chosen: dict[str, list[str]]) -> pd.DataFrame:
    """One row per planted group (GROUPS_COLUMNS): its GO term, channel and chosen genes."""
    return pd.DataFrame(
        [
            {
                "gene_group": g.effect,
                "go_term": g.go_term,
                "channel": g.channel,
                "genes": ";".join(chosen[g.effect]),
                "n_genes": len(chosen[g.effect]),
            }
            for g in planted
        ],
        columns=GROUPS_COLUMNS,
    )


_CHUNK_IMAGES = 4096


def _save_array(array: np.ndarray, path: Path) -> None:
    """Write ``array`` as .npy atomically, copying in chunks (it may be a memmap)."""
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype, shape=array.shape)
        for start in range(0, len(array), _CHUNK_IMAGES):
            out[start : start + _CHUNK_IMAGES] = array[start : start + _CHUNK_IMAGES]
        out.flush()
        del out


def write_screen(screen: SimulatedScreen, store: ImageFiles | PathLike) -> None:
    """Write the images, masks, cells, groups and obs (last) of an image store, each
    atomically, to its files (or the standard names inside a directory)."""
    files = ImageFiles.of(store)
    if files.masks is None or files.cells is None or files.groups is None:
        files = ImageFiles(
            files.images,
            files.obs,
            files.masks or files.images.with_name(layout.MASKS),
            files.cells or files.images.with_name(layout.CELLS),
            files.groups or files.images.with_name(layout.GROUPS),
        )
    if len(screen.images) != len(screen.obs) or len(screen.masks) != len(screen.obs):
        raise ValueError(
            f"screen: {len(screen.images)} images, {len(screen.masks)} masks and "
            f"{len(screen.obs)} obs rows; expected the same number"
        )
    for path in (files.images, files.obs, files.masks, files.cells, files.groups):
        path.parent.mkdir(parents=True, exist_ok=True)
    _save_array(screen.images, files.images)
    _save_array(screen.masks, files.masks)
    with atomic_path(files.cells) as tmp:
        screen.cells.to_parquet(tmp, index=False)
    with atomic_path(files.groups) as tmp:
        screen.groups.to_csv(tmp, index=False)
    with atomic_path(files.obs) as tmp:
        screen.obs.to_parquet(tmp, index=False)
    log.info("wrote %d images to %s", len(screen.obs), files.images.parent)
