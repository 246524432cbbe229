"""Cells of the simulated Cell Painting screen: per-cell perturbation modifiers, shapes,
placement and segmentation.

Cells are irregular ellipses, assigned to pixels Voronoi-style (the smallest normalised radius
wins) so the per-cell label mask has no overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cellconcepts.sources.cellpainting.design import (
    _GROUP_BY_EFFECT,
    BASE_SIGNAL,
    CHANNELS,
    CellType,
)

_MIN_CELL_PIXELS = 12
_MIN_NUCLEUS_PIXELS = 3
_PLACEMENT_TRIES = 30


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
