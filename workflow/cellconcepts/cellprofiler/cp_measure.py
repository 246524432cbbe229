"""CellProfiler features without CellProfiler: scikit-image segmentation + cp-measure.

The in-process alternative when the CellProfiler executable is not installed. Segmentation
follows the shipped pipeline's steps (resources/cellprofiler/cellpainting.cppipe): nuclei by
Otsu on the smoothed nucleus channel with shape-based declumping and a diameter filter, cells
by a watershed from the nuclei over the cytoplasm channel's Otsu foreground (CellProfiler's
propagation, approximated); measurements are CellProfiler's own code (cp-measure) with the
same parameters, renamed to the shared schema (`cp_features`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm import tqdm

from cellconcepts.cellprofiler import schema as cpf

log = logging.getLogger(__name__)

PER_CELL = "Cells"  # one row per cell; the other objects (nuclei) join by object number


def _as_unit(image: np.ndarray) -> np.ndarray:
    """(C, H, W) image as float64 in [0, 1] (uint16/uint8 rescaled like CellProfiler)."""
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    return image.astype(np.float64)


def _otsu_foreground(channel: np.ndarray, *, log_transform: bool = False) -> np.ndarray:
    from skimage.filters import gaussian, threshold_otsu

    smooth = gaussian(channel, sigma=cpf.threshold_sigma(), preserve_range=True)
    if log_transform:
        smooth = np.log(np.maximum(smooth, 1e-6))
    if np.ptp(smooth) == 0:
        return np.zeros(channel.shape, dtype=bool)
    return smooth > threshold_otsu(smooth)


def segment_nuclei(nucleus: np.ndarray) -> np.ndarray:
    """Label image of nuclei: Otsu foreground, holes filled, split at distance-map peaks."""
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential, watershed

    foreground = ndi.binary_fill_holes(_otsu_foreground(nucleus))
    if not foreground.any():
        return np.zeros(nucleus.shape, dtype=np.int32)
    distance = ndi.distance_transform_edt(foreground)
    min_diameter, max_diameter = cpf.NUCLEUS_DIAMETER
    # CellProfiler's automatic maxima suppression: the minimum diameter / 1.5.
    peaks = peak_local_max(
        ndi.gaussian_filter(distance, 1.0),
        min_distance=max(1, int(round(min_diameter / 1.5))),
        labels=label(foreground),
        exclude_border=False,
    )
    markers = np.zeros(nucleus.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=foreground)
    areas = np.bincount(labels.ravel())
    diameters = np.sqrt(4 * areas / np.pi)
    outside = (diameters < min_diameter) | (diameters > max_diameter)
    outside[0] = False
    labels[outside[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


def segment_cells(nuclei: np.ndarray, cytoplasm: np.ndarray) -> np.ndarray:
    """Cells grown from the nuclei over the cytoplasm foreground; label k holds nucleus k."""
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    if nuclei.max() == 0:
        return nuclei.copy()
    foreground = _otsu_foreground(cytoplasm, log_transform=cpf.CYTOPLASM_LOG_THRESHOLD)
    foreground |= nuclei > 0
    cost = sobel(ndi.gaussian_filter(cytoplasm, cpf.threshold_sigma()))
    cost = cost + cpf.REGULARIZATION * np.ptp(cost) * ndi.distance_transform_edt(nuclei == 0) / (
        np.hypot(*cytoplasm.shape)
    )
    cells = watershed(cost, nuclei, mask=foreground)
    filled = np.zeros_like(cells)
    for label, box in enumerate(ndi.find_objects(cells), start=1):
        if box is not None:
            holes = ndi.binary_fill_holes(cells[box] == label) & (cells[box] == 0)
            filled[box][(cells[box] == label) | holes] = label
    return filled.astype(np.int32)


def _featurizer_configs(channels: Sequence[str]) -> dict[str, dict]:
    """cp-measure configurations: the pipeline's modules per object."""
    from cp_measure.featurizer import make_featurizer_config

    shape_and_intensity = {
        "intensity": True,
        "sizeshape": True,
        # as the pipeline's MeasureObjectSizeShape: no advanced moments
        "sizeshape_params": {"calculate_advanced": False, "new_features": False},
        "zernike": True,
        "feret": True,
        "texture": False,
        "granularity": False,
        "radial_distribution": False,
        "radial_zernikes": False,
        "correlation_pearson": False,
        "correlation_costes": False,
        "correlation_manders_fold": False,
        "correlation_rwc": False,
    }
    detailed = {
        **shape_and_intensity,
        "texture": True,
        "texture_params": {"scale": cpf.TEXTURE_SCALE, "gray_levels": cpf.TEXTURE_GRAY_LEVELS},
        "granularity": True,
        "granularity_params": dict(cpf.GRANULARITY),
        "radial_distribution": True,
        "radial_distribution_params": {"bin_count": cpf.RADIAL_BINS, "scaled": True},
    }
    return {
        obj: make_featurizer_config(
            list(channels),
            objects=[obj],
            legacy=True,
            **(detailed if obj in cpf.DETAILED_OBJECTS else shape_and_intensity),
        )
        for obj in cpf.OBJECTS
    }


def _pearson_pairs(pixels: np.ndarray, mask: np.ndarray, channels: Sequence[str]) -> pd.DataFrame:
    """Pearson correlation per object for each unordered channel pair (cp-measure's featurizer
    computes both orders, twice the work for the same numbers)."""
    from itertools import combinations

    from cp_measure._sanitize import sanitize_masks  # the featurizer's own relabelling
    from cp_measure.core.measurecolocalization import get_correlation_pearson

    clean, ids = sanitize_masks(mask.astype(np.int32))
    columns = {}
    for i, j in combinations(range(len(channels)), 2):
        values = get_correlation_pearson(pixels_1=pixels[i], pixels_2=pixels[j], masks=clean)
        name = cpf.from_cp_measure(f"Correlation_Pearson__{channels[i]}__{channels[j]}")
        columns[name] = values["Correlation_Pearson"]
    return pd.DataFrame(columns, index=pd.Index(ids, name="object_number", dtype=np.int64))


def _use_numba() -> None:
    import cp_measure

    try:
        cp_measure.set_accelerator("numba")
    except (RuntimeError, ValueError) as error:  # numba missing: the numpy code is exact too
        log.warning("cp-measure runs without numba (%s)", error)


def measure_objects(
    image: np.ndarray, labels: dict[str, np.ndarray], channels: Sequence[str], configs=None
) -> pd.DataFrame:
    """Per-object features of one (C, H, W) image for label images {object: labels}.

    Objects share numbers across label images (cell k holds nucleus k); one row per object
    number present in the cells' labels, columns ``<Object>_<feature>`` in the shared schema.
    """
    from cp_measure.featurizer import featurize

    configs = configs or _featurizer_configs(channels)
    pixels = _as_unit(image)[None]
    tables: dict[str, pd.DataFrame] = {}
    for obj in cpf.OBJECTS:
        mask = labels[obj]
        if not mask.any():
            continue
        data, keys, rows = featurize(pixels, mask[None, None].astype(np.int32), configs[obj])
        names = [cpf.from_cp_measure(k) for k in keys]
        # Pearson comes for both channel orders; the schema keeps one per sorted pair.
        first = {n: i for i, n in reversed(list(enumerate(names)))}
        keep = [
            i for i, n in enumerate(names) if n is not None and cpf.is_feature(n) and first[n] == i
        ]
        table = pd.DataFrame(
            data[:, keep], columns=[f"{obj}_{names[i]}" for i in keep], dtype=np.float64
        )
        table.index = pd.Index([r[2] for r in rows], name="object_number", dtype=np.int64)
        if obj in cpf.DETAILED_OBJECTS:
            table = table.join(_pearson_pairs(pixels[0], mask, channels).add_prefix(f"{obj}_"))
        tables[obj] = table
    if PER_CELL not in tables:
        return pd.DataFrame(index=pd.Index([], name="object_number", dtype=np.int64))
    merged = tables.pop(PER_CELL)
    for table in tables.values():
        merged = merged.join(table, how="left")
    return merged


def measure_images(
    images: np.ndarray,
    image_ids: Sequence[str],
    image_indices: Sequence[int],
    channels: Sequence[str],
    *,
    nucleus_channel: str,
    cytoplasm_channel: str,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Segment and measure (n, C, H, W) images: per-cell features and the cell label images."""
    import warnings

    for chosen, what in ((nucleus_channel, "nucleus"), (cytoplasm_channel, "cytoplasm")):
        if chosen not in channels:
            raise ValueError(
                f"cellprofiler.{what}_channel: {chosen!r} is not one of the channels {channels}"
            )
    _use_numba()
    configs = _featurizer_configs(channels)
    nucleus_index, cytoplasm_index = (
        channels.index(nucleus_channel),
        channels.index(cytoplasm_channel),
    )
    masks = np.zeros((len(images), *images.shape[2:]), dtype=np.int32)
    tables = []
    for i in tqdm(range(len(images)), desc="cp-measure", unit="image", mininterval=5):
        image = np.asarray(images[i])
        unit = _as_unit(image)
        nuclei = segment_nuclei(unit[nucleus_index])
        cells = segment_cells(nuclei, unit[cytoplasm_index])
        masks[i] = cells
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            table = measure_objects(image, {"Nuclei": nuclei, "Cells": cells}, channels, configs)
        table = table.reset_index()
        table.insert(0, "image_index", int(image_indices[i]))
        table.insert(0, "image_id", str(image_ids[i]))
        tables.append(table)
    cells_table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return cells_table, masks
