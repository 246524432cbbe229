"""Rendering of the simulated Cell Painting screen: the six stains of every cell, then optics
and camera.

Each image ("crop", one site of a well) holds several cells in the six RxRx channels
(``CHANNELS``: Hoechst, ConA, SYTO14, phalloidin, WGA, MitoTracker), stored as 16-bit camera
counts; every channel is textured from banks of smoothed noise (:mod:`.textures`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from cellconcepts.sources.cellpainting.cells import (
    _Cell,
    _draw_cell,
    _Geometry,
    _Modifiers,
    _modifiers,
    _nucleus_mask,
    _place_cells,
    _segment,
)
from cellconcepts.sources.cellpainting.design import CHANNELS, _Plate
from cellconcepts.sources.cellpainting.textures import _TEXTURES, _texture_bank


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
