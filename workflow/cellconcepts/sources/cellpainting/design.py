"""Screen design of the simulated Cell Painting screen: channels, planted groups, cell lines,
plates and which gene goes in which well.

Screen design: ``plates_per_cell_type`` plates (= batches) per cell type; on every plate one well
per gene plus ``control_wells`` non-targeting wells, ``sites_per_well`` images each. Plates carry
batch effects (plate-wide exposure x per-channel gain, background, seeding density, illumination
field, focus blur, noise) that are larger in raw intensity than the perturbation effects, as in
real screens.

Knock-outs come in planted groups (``DEFAULT_GROUPS``): the genes of a group are drawn from one
GO Biological Process 2023 term (and from no other planted term), and all of them cause the same
morphology change, with a gene-specific strength and partial penetrance (each cell of a knock-out
image is perturbed independently; the others look like controls). No-effect genes come from GO
terms that share no gene with any planted term.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

CHANNELS = ["nucleus", "er", "rna", "actin", "golgi_membrane", "mitochondria"]
CONTROL_GENE = "non-targeting"
NO_EFFECT_GROUP = "no_effect"


class PlantedGroup(NamedTuple):
    """A planted knock-out phenotype: its name, the GO BP 2023 term its genes come from, and the
    channel the change mainly lives in."""

    effect: str
    go_term: str
    channel: str


DEFAULT_GROUPS: tuple[PlantedGroup, ...] = (
    PlantedGroup("mito_enlarged", "Mitochondrial Fission (GO:0000266)", "mitochondria"),
    PlantedGroup("er_expansion", "Endoplasmic Reticulum Organization (GO:0007029)", "er"),
    PlantedGroup("large_cells", "Regulation Of Cell Size (GO:0008361)", "golgi_membrane"),
    PlantedGroup("small_clumped", "Mitotic Cytokinesis (GO:0000281)", "nucleus"),
    PlantedGroup("actin_junctions", "Adherens Junction Organization (GO:0034332)", "actin"),
    PlantedGroup("nucleolar", "rRNA Processing (GO:0006364)", "rna"),
)
_GROUP_BY_EFFECT = {g.effect: g for g in DEFAULT_GROUPS}


@dataclass(frozen=True)
class CellType:
    """Base morphology of a cell line (sizes in pixels of the simulated camera)."""

    name: str
    radius: float  # equivalent radius of the cell body
    nucleus_ratio: float  # nucleus radius / cell radius
    elongation: float  # major / minor axis
    density: float  # mean cells per 64 x 64 pixel field
    brightness: tuple[float, ...]  # per-channel stain brightness relative to BASE_SIGNAL


CELL_TYPES: tuple[CellType, ...] = (
    CellType("HUVEC", 8.5, 0.42, 1.7, 9.0, (1.0, 1.1, 0.9, 1.2, 1.0, 0.9)),
    CellType("U2OS", 10.0, 0.38, 1.3, 7.0, (0.9, 1.0, 1.0, 1.0, 1.2, 1.1)),
    CellType("HepG2", 7.0, 0.48, 1.15, 12.0, (1.2, 0.9, 1.2, 0.8, 0.9, 1.3)),
)

# Typical in-focus stain signal per channel (camera counts above background).
BASE_SIGNAL = np.array([10000.0, 6000.0, 5000.0, 8000.0, 6000.0, 4000.0])
CAMERA_OFFSET = 500.0
STRENGTH_RANGE = (0.5, 1.0)
PENETRANCE_RANGE = (0.5, 0.9)
PLATE_GAIN_RANGE = (0.6, 1.5)
PLATE_EXPOSURE_SD = 0.3  # log-sd of the plate-wide exposure factor
PLATE_DENSITY_SD = 0.2  # log-sd of the plate's seeding density


def _resolve_groups(groups: Sequence[str] | Mapping[str, str | None] | None) -> list[PlantedGroup]:
    """The planted groups: all defaults, a list of effect names, or effect -> GO term overrides."""
    if groups is None:
        return list(DEFAULT_GROUPS)
    if isinstance(groups, str):
        raise TypeError(f"groups: expected a list of effect names, got the string {groups!r}")
    overrides = dict(groups) if isinstance(groups, Mapping) else {name: None for name in groups}
    resolved = []
    for effect, term in overrides.items():
        if effect not in _GROUP_BY_EFFECT:
            raise ValueError(
                f"groups: unknown effect {effect!r}; known effects: {list(_GROUP_BY_EFFECT)}"
            )
        default = _GROUP_BY_EFFECT[effect]
        resolved.append(default._replace(go_term=term) if term else default)
    if len(overrides) != len(list(groups)):
        raise ValueError(f"groups: effect names must be unique, got {list(groups)}")
    return resolved


def _check_parameters(**params: object) -> None:
    """Reject sizes the simulator cannot honour, naming the parameter."""
    minimum = {
        "n_cell_types": 1,
        "plates_per_cell_type": 1,
        "genes_per_group": 1,
        "n_no_effect_genes": 0,
        "control_wells": 1,
        "sites_per_well": 1,
        "image_size": 16,
        "n_strong": 0,
    }
    for name, low in minimum.items():
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    scale = params["effect_scale"]
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale >= 0:
        raise ValueError(f"effect_scale: expected a number >= 0, got {scale!r}")


def _cell_types(n: int, rng: np.random.Generator) -> list[CellType]:
    """The named lines first, then generic ones with seeded morphology."""
    types = list(CELL_TYPES[:n])
    for i in range(len(types), n):
        types.append(
            CellType(
                name=f"cell_type_{i + 1}",
                radius=float(rng.uniform(6.5, 10.0)),
                nucleus_ratio=float(rng.uniform(0.38, 0.5)),
                elongation=float(rng.uniform(1.1, 1.7)),
                density=float(rng.uniform(7.0, 12.0)),
                brightness=tuple(float(b) for b in rng.lognormal(0.0, 0.2, len(CHANNELS))),
            )
        )
    return types


def _choose_genes(
    gene_sets: dict[str, list[str]],
    planted: list[PlantedGroup],
    genes_per_group: int,
    n_no_effect: int,
    source: Path,
    rng: np.random.Generator,
) -> tuple[dict[str, list[str]], list[str]]:
    """Genes per planted group (in that term only) and no-effect genes (in no planted term)."""
    for group in planted:
        if group.go_term not in gene_sets:
            raise ValueError(
                f"group {group.effect!r}: GO term {group.go_term!r} not found in {source}"
            )
    term_genes = {g.effect: set(gene_sets[g.go_term]) for g in planted}
    used: set[str] = set()
    chosen: dict[str, list[str]] = {}
    for group in planted:
        others = set().union(*(genes for e, genes in term_genes.items() if e != group.effect))
        candidates = sorted(term_genes[group.effect] - others - used)
        if len(candidates) < genes_per_group:
            raise ValueError(
                f"group {group.effect!r}: GO term {group.go_term!r} has only {len(candidates)} "
                f"genes in no other planted term; genes_per_group={genes_per_group} needs more"
            )
        picked = rng.choice(candidates, size=genes_per_group, replace=False).tolist()
        chosen[group.effect] = picked
        used.update(picked)
    planted_union = set().union(*term_genes.values())
    disjoint = set()
    for genes in gene_sets.values():
        if planted_union.isdisjoint(genes):
            disjoint.update(genes)
    candidates = sorted(disjoint - used)
    if len(candidates) < n_no_effect:
        raise ValueError(
            f"n_no_effect_genes={n_no_effect}: only {len(candidates)} genes in {source} belong to "
            "GO terms disjoint from the planted terms"
        )
    no_effect = rng.choice(candidates, size=n_no_effect, replace=False).tolist()
    return chosen, no_effect


def _well_pool(n_wells: int) -> list[str]:
    """Wells of a 384-well plate to draw from: the inner ones, or all if the design needs more."""
    rows, cols = "ABCDEFGHIJKLMNOP", range(1, 25)
    inner = [f"{r}{c:02d}" for r in rows[1:-1] for c in cols if 1 < c < 24]
    if n_wells <= len(inner):
        return inner
    every = [f"{r}{c:02d}" for r in rows for c in cols]
    if n_wells > len(every):
        raise ValueError(
            f"a plate holds at most {len(every)} wells; this design needs {n_wells} "
            "(genes + control_wells)"
        )
    return every


@dataclass
class _Plate:
    """Batch effects of one plate."""

    plate_id: str
    cell_type: CellType
    gain: np.ndarray  # (6,) intensity gain: plate-wide exposure x per-channel staining
    density: float  # seeding-density factor on the expected number of cells per field
    background: np.ndarray  # (6,) counts added before noise (autofluorescence + camera offset)
    illumination: np.ndarray  # (H, W) multiplicative field
    blur: float  # gaussian sigma (pixels) of the focus blur
    read_noise: float  # sd in counts
    shot_noise: float  # variance per count of signal


def _make_plate(plate_id: str, cell_type: CellType, size: int, rng: np.random.Generator) -> _Plate:
    """Draw one plate's batch effects: gain, seeding density, background, vignetting and
    gradient, focus blur, noise."""
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    vignetting = rng.uniform(0.1, 0.35)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    slope = rng.uniform(0.0, 0.2)
    field = (1.0 - vignetting * (x**2 + y**2) / 2.0) * (
        1.0 + slope * (x * np.cos(angle) + y * np.sin(angle))
    )
    return _Plate(
        plate_id=plate_id,
        cell_type=cell_type,
        gain=rng.lognormal(0.0, PLATE_EXPOSURE_SD) * rng.uniform(*PLATE_GAIN_RANGE, len(CHANNELS)),
        density=float(rng.lognormal(0.0, PLATE_DENSITY_SD)),
        background=CAMERA_OFFSET + rng.uniform(100.0, 600.0, len(CHANNELS)),
        illumination=field.astype(np.float32),
        blur=float(rng.uniform(0.3, 1.2)),
        read_noise=float(rng.uniform(5.0, 25.0)),
        shot_noise=float(rng.uniform(0.8, 1.5)),
    )


def _gene_table(
    planted: list[PlantedGroup],
    chosen: dict[str, list[str]],
    no_effect: list[str],
    effect_scale: float,
    n_strong: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One row per knocked-out gene (planted groups in order, then the no-effect genes): group,
    GO term, strength and penetrance (0 for no-effect genes), and ``strong_perturbation`` (the
    gene's name for the ``n_strong`` planted genes with the highest strength x penetrance).

    Draws all strengths, then all penetrances, from the design stream ``rng``.
    """
    genes = pd.DataFrame(
        [
            {"gene": gene, "gene_group": group.effect, "go_term": group.go_term}
            for group in planted
            for gene in chosen[group.effect]
        ]
        + [{"gene": gene, "gene_group": NO_EFFECT_GROUP, "go_term": None} for gene in no_effect],
        columns=["gene", "gene_group", "go_term"],
    )
    is_planted = (genes["gene_group"] != NO_EFFECT_GROUP).to_numpy()
    genes["strength"] = np.where(
        is_planted, rng.uniform(*STRENGTH_RANGE, len(genes)) * effect_scale, 0.0
    )
    genes["penetrance"] = np.where(is_planted, rng.uniform(*PENETRANCE_RANGE, len(genes)), 0.0)
    if n_strong > int(is_planted.sum()):
        log.warning(
            "n_strong=%d but only %d planted genes; all of them form the strong subset",
            n_strong,
            int(is_planted.sum()),
        )
    score = np.where(is_planted, genes["strength"] * genes["penetrance"], -np.inf)
    strong = np.argsort(-score, kind="stable")[: min(n_strong, int(is_planted.sum()))]
    genes["strong_perturbation"] = None
    genes.loc[strong, "strong_perturbation"] = genes.loc[strong, "gene"]
    return genes


def _well_contents(genes: pd.DataFrame, control_wells: int) -> pd.DataFrame:
    """What every plate holds, one row per well: the gene wells, then ``control_wells``
    non-targeting wells (no effect, no strong perturbation)."""
    controls = pd.DataFrame(
        {
            "gene": CONTROL_GENE,
            "gene_group": CONTROL_GENE,
            "go_term": None,
            "strength": 0.0,
            "penetrance": 0.0,
            "strong_perturbation": None,
        },
        index=range(control_wells),
    )
    return pd.concat([genes, controls], ignore_index=True)


def _plate_design(
    plates: list[_Plate],
    well_contents: pd.DataFrame,
    pool: list[str],
    sites_per_well: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One row per image: on each plate (in order) the well contents in a random layout drawn
    from ``pool`` (one permutation per plate, from the plate stream), sorted by well, with one
    row per site 1..``sites_per_well``."""
    rows = []
    for plate in plates:
        wells = rng.permutation(pool)[: len(well_contents)]
        table = well_contents.assign(well=wells, plate=plate.plate_id)
        rows.append(table.sort_values("well", kind="stable"))
    design = pd.concat(rows, ignore_index=True)
    design = design.loc[design.index.repeat(sites_per_well)].reset_index(drop=True)
    design["site"] = np.tile(np.arange(1, sites_per_well + 1), len(design) // sites_per_well)
    return design
