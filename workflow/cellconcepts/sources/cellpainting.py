"""Deterministic simulator of a CRISPR knock-out Cell Painting screen with per-cell ground truth.

Each image ("crop", one site of a well) holds several cells in the six RxRx channels
(``CHANNELS``: Hoechst, ConA, SYTO14, phalloidin, WGA, MitoTracker), stored as 16-bit camera
counts. Cells are irregular ellipses, assigned to pixels Voronoi-style (the smallest normalised
radius wins) so the per-cell label mask has no overlaps, and every channel is textured from
banks of smoothed noise (chromatin, reticular ER, mitochondrial puncta).

Screen design: ``plates_per_cell_type`` plates (= batches) per cell type; on every plate one well
per gene plus ``control_wells`` non-targeting wells, ``sites_per_well`` images each. Plates carry
batch effects (plate-wide exposure x per-channel gain, background, seeding density, illumination
field, focus blur, noise) that are larger in raw intensity than the perturbation effects, as in
real screens.

Knock-outs come in planted groups (``DEFAULT_GROUPS``): the genes of a group are drawn from one
GO Biological Process 2023 term (and from no other planted term), and all of them cause the same
morphology change, with a gene-specific strength and partial penetrance (each cell of a knock-out
image is perturbed independently; the others look like controls). No-effect genes come from GO
terms that share no gene with any planted term. Everything is seeded; no global RNG is used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from cellconcepts.enrich.genesets import go_bp_2023_path, read_gmt
from cellconcepts.files import atomic_path
from cellconcepts.store import layout
from cellconcepts.store.layout import ImageFiles, PathLike

log = logging.getLogger(__name__)

CHANNELS = ["nucleus", "er", "rna", "actin", "golgi_membrane", "mitochondria"]
CONTROL_GENE = "non-targeting"
NO_EFFECT_GROUP = "no_effect"

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

_MIN_CELL_PIXELS = 12
_MIN_NUCLEUS_PIXELS = 3
_PLACEMENT_TRIES = 30
_TEXTURES = ("dna", "er", "mito", "cyto")


@dataclass
class SimulatedScreen:
    """Images with their per-image, per-cell and per-group ground truth."""

    images: np.ndarray  # uint16 (n, 6, H, W)
    masks: np.ndarray  # int32 (n, H, W), 0 = background, per-image cell labels 1..n_cells
    obs: pd.DataFrame  # one row per image (OBS_COLUMNS)
    cells: pd.DataFrame  # one row per cell (CELLS_COLUMNS)
    groups: pd.DataFrame  # one row per planted group (GROUPS_COLUMNS)


# --------------------------------------------------------------------------- screen design


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


# --------------------------------------------------------------------------- textures


def _texture_bank(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Periodic noise textures, padded so that any ``size`` crop at offset < bank is a slice."""
    bank = max(256, 2 * size)

    def smooth(sigma: float | tuple[float, float]) -> np.ndarray:
        field = ndimage.gaussian_filter(rng.standard_normal((bank, bank)), sigma, mode="wrap")
        return (field - field.mean()) / field.std()

    band = smooth(1.0) - 0.6 * smooth(2.2)
    band /= band.std()
    filaments = np.maximum(smooth((0.6, 1.4)), smooth((1.4, 0.6)))
    textures = {
        "dna": np.clip(1.0 + 0.3 * smooth(0.8) + 0.3 * np.maximum(smooth(0.6) - 1.2, 0), 0.3, None),
        "er": 0.3 + np.exp(-((band / 0.45) ** 2)),
        "mito": np.maximum(filaments - 0.7, 0.0),
        "cyto": np.clip(1.0 + 0.25 * smooth(2.5), 0.3, None),
    }
    return {
        name: np.pad(t / t.mean(), ((0, size), (0, size)), mode="wrap").astype(np.float32)
        for name, t in textures.items()
    }


# --------------------------------------------------------------------------- cells


@dataclass
class _Modifiers:
    """How a perturbation changes one cell; the defaults describe an unperturbed cell."""

    radius: float = 1.0
    roundness: float = 0.0  # 0 keeps the elongation, 1 makes the cell round
    nucleus_size: float = 1.0
    nucleus_bright: float = 1.0
    binucleate: float = 0.0  # probability of a second nucleus
    er_length: float = 1.0
    er_bright: float = 1.0
    extra_nucleoli: int = 0
    nucleoli_size: float = 1.0
    nucleoli_bright: float = 1.0
    cortical: float = 1.0
    actin_diffuse: float = 1.0
    fibres: float = 1.0
    membrane_width: float = 1.0
    golgi_size: float = 1.0
    golgi_bright: float = 1.0
    mito_large: float = 0.0  # weight of enlarged mitochondria (vs the normal puncta texture)
    mito_bright: float = 1.0
    isolation: float = 1.0  # scales the exclusion distance to other cells
    clumped: bool = False
    drop: float = 0.0  # probability that the cell is absent (failed divisions)


def _modifiers(effect: str | None, s: float) -> _Modifiers:
    """Per-cell changes of a planted effect at strength ``s`` (~0.5-1 at effect_scale 1)."""
    if effect is None or s <= 0:
        return _Modifiers()
    if effect == "mito_enlarged":
        return _Modifiers(mito_large=min(1.0, s), mito_bright=1.0 + 0.8 * s)
    if effect == "er_expansion":
        return _Modifiers(er_length=1.0 + 1.2 * s, er_bright=1.0 + 0.3 * s)
    if effect == "large_cells":
        return _Modifiers(
            radius=1.0 + 0.45 * s,
            membrane_width=1.0 + 0.8 * s,
            golgi_size=1.0 + 0.6 * s,
            golgi_bright=1.0 + 0.3 * s,
        )
    if effect == "small_clumped":
        return _Modifiers(
            radius=max(0.4, 1.0 - 0.3 * s),
            nucleus_size=max(0.5, 1.0 - 0.2 * s),
            nucleus_bright=1.0 + 0.7 * s,
            binucleate=min(1.0, 0.3 * s),
            clumped=True,
            drop=min(0.9, 0.5 * s),
        )
    if effect == "actin_junctions":
        return _Modifiers(
            radius=max(0.4, 1.0 - 0.2 * s),
            roundness=min(1.0, s),
            cortical=max(0.0, 1.0 - 0.8 * s),
            actin_diffuse=1.0 + 2.5 * s,
            fibres=1.0 + 0.5 * s,
            isolation=1.0 + 0.6 * s,
        )
    if effect == "nucleolar":
        return _Modifiers(
            extra_nucleoli=int(round(3 * min(s, 1.5))),
            nucleoli_size=1.0 + 0.5 * s,
            nucleoli_bright=1.0 + 0.7 * s,
        )
    raise ValueError(f"unknown effect {effect!r}; known effects: {list(_GROUP_BY_EFFECT)}")


@dataclass
class _Cell:
    """Geometry and stain parameters of one cell."""

    perturbed: bool
    mod: _Modifiers
    radius: float
    a: float  # semi-axes of the body ellipse
    b: float
    theta: float
    harmonics: np.ndarray  # (3, 2): amplitude and phase of boundary harmonics 2..4
    nucleus_offset: np.ndarray  # (2,) (dy, dx) of the nucleus centre from the cell centre
    na: float  # nucleus semi-axes
    nb: float
    nucleus_harmonics: np.ndarray
    brightness: np.ndarray  # (6,) counts
    cy: float = 0.0
    cx: float = 0.0


def _draw_cell(
    cell_type: CellType, perturbed: bool, mod: _Modifiers, rng: np.random.Generator
) -> _Cell:
    """Shape and brightness of one cell, with the perturbation's geometry changes applied."""
    radius = cell_type.radius * mod.radius * rng.lognormal(0.0, 0.12)
    elongation = max(1.0, cell_type.elongation * rng.lognormal(0.0, 0.1))
    elongation = 1.0 + (elongation - 1.0) * (1.0 - mod.roundness)
    a, b = radius * np.sqrt(elongation), radius / np.sqrt(elongation)
    n_radius = radius * cell_type.nucleus_ratio * mod.nucleus_size * rng.lognormal(0.0, 0.08)
    n_elong = elongation**0.25
    offset_angle = rng.uniform(0, 2 * np.pi)
    offset = 0.15 * radius * rng.uniform() * np.array([np.sin(offset_angle), np.cos(offset_angle)])
    brightness = (
        BASE_SIGNAL * np.asarray(cell_type.brightness) * rng.lognormal(0.0, 0.15, len(CHANNELS))
    )
    return _Cell(
        perturbed=perturbed,
        mod=mod,
        radius=float(radius),
        a=float(a),
        b=float(b),
        theta=float(rng.uniform(0, np.pi)),
        harmonics=np.column_stack([rng.uniform(0, 0.09, 3), rng.uniform(0, 2 * np.pi, 3)]),
        nucleus_offset=offset,
        na=float(n_radius * n_elong),
        nb=float(n_radius / n_elong),
        nucleus_harmonics=np.column_stack([rng.uniform(0, 0.04, 3), rng.uniform(0, 2 * np.pi, 3)]),
        brightness=brightness,
    )


def _place_cells(cells: list[_Cell], size: int, rng: np.random.Generator) -> list[_Cell]:
    """Rejection-sample centres (clumped cells around one spot); cells that do not fit are
    dropped, which caps the count at what fits in the field."""
    placed: list[_Cell] = []
    centres = np.empty((0, 2))
    reach = np.empty(0)
    clump = rng.uniform(0.2 * size, 0.8 * size, 2)
    order = sorted(range(len(cells)), key=lambda i: not cells[i].mod.clumped)
    for i in order:
        cell = cells[i]
        spacing = 0.65 if cell.mod.clumped else 0.85
        own_reach = cell.radius * cell.mod.isolation
        for _ in range(_PLACEMENT_TRIES):
            if cell.mod.clumped:
                centre = clump + rng.normal(0.0, 1.5 * cell.radius, 2)
            else:
                centre = rng.uniform(0.0, size, 2)
            if len(placed) == 0 or np.all(
                np.hypot(*(centres - centre).T) > spacing * (own_reach + reach)
            ):
                cell.cy, cell.cx = float(centre[0]), float(centre[1])
                placed.append(cell)
                centres = np.vstack([centres, centre])
                reach = np.append(reach, own_reach)
                break
    return placed


def _box(cy: float, cx: float, extent: float, size: int) -> tuple[slice, slice] | None:
    """Pixel window around a centre, clipped to the image; None if it misses the image."""
    y0, y1 = max(0, int(np.floor(cy - extent))), min(size, int(np.ceil(cy + extent)) + 1)
    x0, x1 = max(0, int(np.floor(cx - extent))), min(size, int(np.ceil(cx + extent)) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _rho(
    dy: np.ndarray, dx: np.ndarray, a: float, b: float, theta: float, harmonics: np.ndarray
) -> np.ndarray:
    """Normalised radius of pixels in an irregular ellipse: < 1 inside, 1 on the boundary."""
    c, s = np.cos(theta), np.sin(theta)
    u = (dx * c + dy * s) / a
    v = (dy * c - dx * s) / b
    phi = np.arctan2(v, u)
    boundary = 1.0 + sum(
        amp * np.cos(k * phi + phase) for k, (amp, phase) in enumerate(harmonics, 2)
    )
    return np.hypot(u, v) / boundary


class _Geometry(NamedTuple):
    """One cell's footprint: its window, pixel offsets from its centre and normalised radii."""

    box: tuple[slice, slice]
    dy: np.ndarray
    dx: np.ndarray
    rho: np.ndarray  # cell body
    rho_n: np.ndarray  # (first) nucleus
    rho_n2: np.ndarray | None  # second nucleus of binucleated cells


def _geometry(cell: _Cell, size: int, second_nucleus: bool) -> _Geometry | None:
    """Normalised radii of a cell's body and nucleus (nuclei) on its window."""
    extent = max(cell.a, cell.b) * (1.0 + cell.harmonics[:, 0].sum()) + 1.0
    box = _box(cell.cy, cell.cx, extent, size)
    if box is None:
        return None
    dy = (np.arange(box[0].start, box[0].stop) - cell.cy)[:, None]
    dx = (np.arange(box[1].start, box[1].stop) - cell.cx)[None, :]
    rho = _rho(dy, dx, cell.a, cell.b, cell.theta, cell.harmonics)
    ny, nx = cell.nucleus_offset
    rho_n2 = None
    if second_nucleus:
        # Two daughter nuclei side by side along the major axis.
        shift = 0.9 * cell.na * np.array([np.sin(cell.theta), np.cos(cell.theta)])
        ny, nx = ny - shift[0], nx - shift[1]
        rho_n2 = _rho(
            dy - (ny + 2 * shift[0]),
            dx - (nx + 2 * shift[1]),
            cell.na,
            cell.nb,
            cell.theta,
            cell.nucleus_harmonics,
        )
    rho_n = _rho(dy - ny, dx - nx, cell.na, cell.nb, cell.theta, cell.nucleus_harmonics)
    return _Geometry(box, dy, dx, rho, rho_n, rho_n2)


def _assign(geometries: list[_Geometry | None], size: int) -> np.ndarray:
    """Label image: each pixel goes to the cell with the smallest normalised radius below 1."""
    best = np.full((size, size), np.inf, dtype=np.float64)
    labels = np.zeros((size, size), dtype=np.int32)
    for index, geo in enumerate(geometries):
        if geo is None:
            continue
        window = best[geo.box]
        win = (geo.rho < 1.0) & (geo.rho < window)
        window[win] = geo.rho[win]
        labels[geo.box][win] = index + 1
    return labels


def _nucleus_mask(geo: _Geometry, own: np.ndarray) -> np.ndarray:
    """Nucleus pixels of a cell (inside its own body)."""
    inside = geo.rho_n < 1.0
    if geo.rho_n2 is not None:
        inside |= geo.rho_n2 < 1.0
    return inside & own


def _segment(
    cells: list[_Cell], size: int, rng: np.random.Generator
) -> tuple[list[_Cell], list[_Geometry], np.ndarray]:
    """Assign pixels to cells, dropping cells too small (or without nucleus) to be seen;
    returns the kept cells, their geometries and labels 1..n in the same order."""
    binucleated = [bool(rng.uniform() < c.mod.binucleate) for c in cells]
    geometries = [_geometry(c, size, two) for c, two in zip(cells, binucleated, strict=True)]
    while True:
        labels = _assign(geometries, size)
        keep = []
        for index, geo in enumerate(geometries):
            if geo is None:
                continue
            own = labels[geo.box] == index + 1
            if own.sum() >= _MIN_CELL_PIXELS and _nucleus_mask(geo, own).sum() >= (
                _MIN_NUCLEUS_PIXELS
            ):
                keep.append(index)
        if len(keep) == sum(g is not None for g in geometries):
            break
        geometries = [g if i in keep else None for i, g in enumerate(geometries)]
    kept_cells = [cells[i] for i in keep]
    kept_geometries = [geometries[i] for i in keep]
    relabel = np.zeros(len(geometries) + 1, dtype=np.int32)
    relabel[np.asarray(keep, dtype=np.int64) + 1] = np.arange(1, len(keep) + 1, dtype=np.int32)
    return kept_cells, kept_geometries, relabel[labels]


# --------------------------------------------------------------------------- rendering


def _edge_distance(labels: np.ndarray) -> np.ndarray:
    """Distance (pixels) to the nearest cell boundary (towards background or a neighbour).

    The image border is not a boundary: cells there continue outside the crop.
    """
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = np.zeros(labels.shape, dtype=bool)
    for shifted in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        edge |= shifted != centre
    edge &= labels > 0
    if not edge.any():
        return np.full(labels.shape, np.inf)
    return ndimage.distance_transform_edt(~edge)


def _unit_mean(texture: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``texture`` scaled to mean 1 over ``region`` (a cell's few pixels can sample it unevenly)."""
    mean = float(texture[region].mean()) if region.any() else 1.0
    return texture / max(mean, 0.25)


def _blobs(
    geo: _Geometry, region: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """A few large, elongated mitochondria (fused networks) centred on pixels of ``region``."""
    out = np.zeros(region.shape)
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return out
    n = max(2, int(round(len(ys) / 30)))
    picks = rng.choice(len(ys), size=n)
    dy, dx = np.broadcast_arrays(geo.dy, geo.dx)
    for k, angle in zip(picks, rng.uniform(0, np.pi, n), strict=True):
        along = (dx - dx[ys[k], xs[k]]) * np.cos(angle) + (dy - dy[ys[k], xs[k]]) * np.sin(angle)
        across = (dy - dy[ys[k], xs[k]]) * np.cos(angle) - (dx - dx[ys[k], xs[k]]) * np.sin(angle)
        out += np.exp(-((along / (0.18 * radius + 1.0)) ** 2) - (across / 1.0) ** 2)
    return out


def _spots(dy: np.ndarray, dx: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of isotropic gaussian spots (peak 1) at ``centres`` (k, 2) relative offsets."""
    out = np.zeros(np.broadcast_shapes(dy.shape, dx.shape))
    for y, x in centres:
        out += np.exp(-((dy - y) ** 2 + (dx - x) ** 2) / (2.0 * sigma**2))
    return out


def _er_stain(
    cell: _Cell, texture: np.ndarray, from_nucleus: np.ndarray, nucleus: np.ndarray
) -> np.ndarray:
    """ER: reticular network around the nucleus, decaying towards the membrane (dim inside the
    nucleus)."""
    mod = cell.mod
    length = 0.35 * cell.radius * mod.er_length
    er = texture * np.exp(-from_nucleus / length) * mod.er_bright
    return np.where(nucleus, 0.1 * er, er)


def _rna_stain(
    cell: _Cell,
    geo: _Geometry,
    nucleus: np.ndarray,
    n_radius: float,
    cyto_texture: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """RNA: 2-4 nucleoli (more, larger and brighter when rRNA processing fails) inside the
    nucleus, weak textured cytoplasm elsewhere."""
    mod = cell.mod
    ny, nx = cell.nucleus_offset
    n_nucleoli = int(rng.integers(2, 5)) + mod.extra_nucleoli
    angle = rng.uniform(0, 2 * np.pi, n_nucleoli)
    dist = 0.55 * n_radius * np.sqrt(rng.uniform(0, 1, n_nucleoli))
    centres = np.column_stack([ny + dist * np.sin(angle), nx + dist * np.cos(angle)])
    sigma = 0.12 * n_radius * mod.nucleoli_size * rng.uniform(0.8, 1.2) + 0.35
    nucleoli = _spots(geo.dy, geo.dx, centres, sigma) * mod.nucleoli_bright
    return np.where(nucleus, np.minimum(nucleoli, 2.5) + 0.25, 0.15 * cyto_texture)


def _actin_stain(
    cell: _Cell,
    geo: _Geometry,
    d_edge: np.ndarray,
    cyto_texture: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Actin: cortical ring at the cell edge, a few stress fibres along the major axis and
    diffuse cytoplasm."""
    mod = cell.mod
    cortical = np.exp(-d_edge / 1.2) * mod.cortical
    fibres = np.zeros_like(cortical)
    n_fibres = int(rng.integers(2, 5))
    for _ in range(n_fibres):
        phi = cell.theta + rng.normal(0.0, 0.2)
        offset = rng.uniform(-0.7, 0.7) * cell.b
        across = geo.dx * -np.sin(phi) + geo.dy * np.cos(phi) - offset
        fibres += 0.45 * np.exp(-(across**2) / (2 * 0.5**2))
    return cortical + fibres * mod.fibres + 0.15 * mod.actin_diffuse * cyto_texture


def _golgi_membrane_stain(
    cell: _Cell, geo: _Geometry, d_edge: np.ndarray, n_radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Golgi/membrane (WGA): thin plasma-membrane ring plus a compact Golgi blob beside the
    nucleus, on a faint floor."""
    mod = cell.mod
    ny, nx = cell.nucleus_offset
    width = 0.7 * mod.membrane_width
    membrane = 0.6 * np.exp(-(d_edge**2) / (2 * width**2))
    side = rng.uniform(0, 2 * np.pi)
    golgi_at = np.array(
        [[ny + (n_radius + 1.0) * np.sin(side), nx + (n_radius + 1.0) * np.cos(side)]]
    )
    golgi = _spots(geo.dy, geo.dx, golgi_at, 1.3 * mod.golgi_size) * mod.golgi_bright
    return membrane + golgi + 0.08


def _mito_stain(
    cell: _Cell,
    geo: _Geometry,
    cytoplasm: np.ndarray,
    texture: np.ndarray,
    from_nucleus: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mitochondria: puncta / short filaments (blended with enlarged ones when perturbed),
    denser near the nucleus."""
    mod = cell.mod
    puncta = texture
    if mod.mito_large > 0:
        enlarged = _unit_mean(_blobs(geo, cytoplasm, cell.radius, rng), cytoplasm)
        puncta = (1.0 - mod.mito_large) * puncta + mod.mito_large * enlarged
    return puncta * (0.4 + 0.6 * np.exp(-from_nucleus / (0.6 * cell.radius))) * mod.mito_bright


def _render_cell(
    signal: np.ndarray,
    cell: _Cell,
    geo: _Geometry,
    own: np.ndarray,
    edge_distance: np.ndarray,
    textures: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> None:
    """Add one cell's six stains to ``signal`` (6, H, W) on its window, inside its own pixels.

    The stain helpers draw from ``rng`` in channel order (rna, actin, golgi_membrane,
    mitochondria); keep that order, it fixes the seeded images.
    """
    mod = cell.mod
    box = geo.box
    nucleus = _nucleus_mask(geo, own)
    cytoplasm = own & ~nucleus
    rho_n = geo.rho_n if geo.rho_n2 is None else np.minimum(geo.rho_n, geo.rho_n2)
    n_radius = np.sqrt(cell.na * cell.nb)
    from_nucleus = np.maximum(rho_n - 1.0, 0.0) * n_radius  # pixels from the nuclear envelope
    d_edge = edge_distance[box]
    # Textures give the pattern; each cell's mean is set by its brightness and perturbation.
    tex = {name: t[box] for name, t in textures.items()}
    for name, region in (("dna", nucleus), ("er", cytoplasm), ("mito", cytoplasm)):
        tex[name] = _unit_mean(tex[name], region)

    # nucleus: chromatin texture, slightly dimmer towards the envelope.
    dna = tex["dna"] * (0.8 + 0.2 * (1.0 - np.minimum(rho_n, 1.0) ** 2)) * mod.nucleus_bright
    er = _er_stain(cell, tex["er"], from_nucleus, nucleus)
    rna = _rna_stain(cell, geo, nucleus, n_radius, tex["cyto"], rng)
    actin = _actin_stain(cell, geo, d_edge, tex["cyto"], rng)
    golgi_membrane = _golgi_membrane_stain(cell, geo, d_edge, n_radius, rng)
    mito = _mito_stain(cell, geo, cytoplasm, tex["mito"], from_nucleus, rng)

    stains = (
        np.where(nucleus, dna, 0.0),
        np.where(cytoplasm | nucleus, er, 0.0),
        np.where(own, rna, 0.0),
        np.where(own, actin, 0.0),
        np.where(own, golgi_membrane, 0.0),
        np.where(cytoplasm, mito, 0.0),
    )
    for channel, stain in enumerate(stains):
        signal[channel][box] += (cell.brightness[channel] * stain).astype(np.float32)


def _render_image(
    plate: _Plate,
    effect: str | None,
    strength: float,
    penetrance: float,
    size: int,
    textures: dict[str, np.ndarray],
    bank: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One crop: uint16 image (6, H, W), int32 labels (H, W) and per-label perturbed flags."""
    cell_type = plate.cell_type
    expected = cell_type.density * plate.density * (size / 64.0) ** 2
    n_cells = int(min(max(1, rng.poisson(expected)), 2 * expected + 2))
    perturbed = (
        rng.uniform(size=n_cells) < penetrance if effect is not None and strength > 0 else None
    )
    mods = [
        _modifiers(effect, strength) if perturbed is not None and perturbed[i] else _Modifiers()
        for i in range(n_cells)
    ]
    present = [i for i in range(n_cells) if rng.uniform() >= mods[i].drop]
    if not present:
        present = [0]
    cells = [
        _draw_cell(cell_type, perturbed is not None and bool(perturbed[i]), mods[i], rng)
        for i in present
    ]
    cells = _place_cells(cells, size, rng)
    cells, geometries, labels = _segment(cells, size, rng)

    offsets = rng.integers(0, bank, (len(_TEXTURES), 2))
    crops = {
        name: textures[name][oy : oy + size, ox : ox + size]
        for name, (oy, ox) in zip(_TEXTURES, offsets, strict=True)
    }
    edge_distance = _edge_distance(labels)
    signal = np.zeros((len(CHANNELS), size, size), dtype=np.float32)
    for label, (cell, geo) in enumerate(zip(cells, geometries, strict=True), start=1):
        own = labels[geo.box] == label
        _render_cell(signal, cell, geo, own, edge_distance, crops, rng)

    # Optics (focus blur, illumination field, plate gain), then camera background and noise.
    blur = plate.blur * rng.lognormal(0.0, 0.1)
    if blur > 0:
        signal = ndimage.gaussian_filter(signal, (0.0, blur, blur), mode="reflect")
    signal *= plate.illumination[None] * plate.gain[:, None, None].astype(np.float32)
    noise_sd = np.sqrt(plate.shot_noise * signal + plate.read_noise**2)
    counts = (
        signal
        + plate.background[:, None, None]
        + noise_sd * rng.standard_normal(signal.shape, dtype=np.float32)
    )
    image = np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    flags = np.array([c.perturbed for c in cells], dtype=bool)
    return image, labels, flags


def _render_design(
    design: pd.DataFrame,
    plate_by_id: dict[str, _Plate],
    image_size: int,
    texture_seq: np.random.SeedSequence,
    image_seq: np.random.SeedSequence,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Render every row of ``design`` in order: uint16 images (n, 6, H, W), int32 masks
    (n, H, W) and the per-cell perturbed flags of each image.

    The texture bank comes from ``texture_seq``; all images draw, one after the other, from one
    stream seeded by ``image_seq``, so the design order fixes every image.
    """
    n = len(design)
    images = np.empty((n, len(CHANNELS), image_size, image_size), dtype=np.uint16)
    masks = np.empty((n, image_size, image_size), dtype=np.int32)
    textures = _texture_bank(image_size, np.random.default_rng(texture_seq))
    bank = next(iter(textures.values())).shape[0] - image_size
    image_rng = np.random.default_rng(image_seq)
    effects = design["gene_group"].where(design["strength"] > 0, None).to_numpy()
    flags = []
    for i in tqdm(range(n), desc="simulating images", unit="image", disable=not progress):
        images[i], masks[i], perturbed = _render_image(
            plate_by_id[design.at[i, "plate"]],
            effects[i],
            float(design.at[i, "strength"]),
            float(design.at[i, "penetrance"]),
            image_size,
            textures,
            bank,
            image_rng,
        )
        flags.append(perturbed)
    return images, masks, flags


# --------------------------------------------------------------------------- public API


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
