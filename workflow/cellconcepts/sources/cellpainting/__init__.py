"""Deterministic simulator of a CRISPR knock-out Cell Painting screen with per-cell ground truth.

Each image ("crop", one site of a well) holds several cells in the six RxRx channels
(``CHANNELS``: Hoechst, ConA, SYTO14, phalloidin, WGA, MitoTracker), stored as 16-bit camera
counts. Cells are irregular ellipses, assigned to pixels Voronoi-style (the smallest normalised
radius wins) so the per-cell label mask has no overlaps, and every channel is textured from
banks of smoothed noise (chromatin, reticular ER, mitochondrial puncta). Everything is seeded; no
global RNG is used.

Modules, in the order a screen is made: :mod:`.design` (channels, planted groups, cell lines,
plates and the well layout), :mod:`.textures` (noise banks), :mod:`.cells` (perturbation
modifiers, shapes, placement, segmentation), :mod:`.render` (stains, optics, camera) and
:mod:`.api` (``simulate_screen``, the ground-truth tables, ``write_screen``). The public names
are re-exported here.
"""

from cellconcepts.sources.cellpainting.api import (
    CELLS_COLUMNS,
    GROUPS_COLUMNS,
    OBS_COLUMNS,
    SimulatedScreen,
    simulate_screen,
    write_screen,
)
from cellconcepts.sources.cellpainting.design import (
    BASE_SIGNAL,
    CAMERA_OFFSET,
    CELL_TYPES,
    CHANNELS,
    CONTROL_GENE,
    DEFAULT_GROUPS,
    NO_EFFECT_GROUP,
    PENETRANCE_RANGE,
    PLATE_DENSITY_SD,
    PLATE_EXPOSURE_SD,
    PLATE_GAIN_RANGE,
    STRENGTH_RANGE,
    CellType,
    PlantedGroup,
)

__all__ = [
    "BASE_SIGNAL",
    "CAMERA_OFFSET",
    "CELLS_COLUMNS",
    "CELL_TYPES",
    "CHANNELS",
    "CONTROL_GENE",
    "DEFAULT_GROUPS",
    "GROUPS_COLUMNS",
    "NO_EFFECT_GROUP",
    "OBS_COLUMNS",
    "PENETRANCE_RANGE",
    "PLATE_DENSITY_SD",
    "PLATE_EXPOSURE_SD",
    "PLATE_GAIN_RANGE",
    "STRENGTH_RANGE",
    "CellType",
    "PlantedGroup",
    "SimulatedScreen",
    "simulate_screen",
    "write_screen",
]
