"""Per-image CellProfiler profiles: aggregate per-cell features to one row per image.

CellProfiler writes one row per segmented cell. The profile baselines need one row per image,
in the order of the image embeddings, so :func:`image_profiles` aggregates the cells of each
image (mean or median, ignoring non-finite values) and then removes features that cannot be
used downstream: features that are undefined for an image that has cells, and features that are
constant over images (they carry no signal and break per-feature quantiles/standardisation).
Images without any cell get the per-feature median of the images with cells, rather than NaN
rows that would otherwise drop every feature.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "META_COLUMNS",
    "ProfileReport",
    "aligned_profiles",
    "image_profiles",
    "measurement_summary",
]

#: Identifier columns that are never treated as features, even when numeric.
META_COLUMNS: tuple[str, ...] = ("image_id", "object_number", "image_index", "cell_label")

_HOW = ("mean", "median")
_MAX_NAMED = 5  # ids named in errors and warnings


@dataclass
class ProfileReport:
    """What :func:`image_profiles` did to the features and images.

    ``dropped`` lists the NaN-dropped features first, then the constant ones (each in input
    column order), so ``dropped[:n_dropped_nan]`` are the NaN drops.
    """

    n_features_in: int
    n_dropped_nan: int
    n_dropped_constant: int
    n_images_without_cells: int
    dropped: list[str] = field(default_factory=list)


def _feature_columns(
    cells: pd.DataFrame, id_column: str, feature_columns: Sequence[str] | None
) -> list[str]:
    """The validated feature columns: given ones, or every numeric non-meta column."""
    if feature_columns is None:
        excluded = {id_column, *META_COLUMNS}
        return [
            c
            for c in cells.columns
            if c not in excluded
            and pd.api.types.is_numeric_dtype(cells[c])
            and not pd.api.types.is_bool_dtype(cells[c])
        ]
    columns = list(feature_columns)
    missing = [c for c in columns if c not in cells.columns]
    if missing:
        raise ValueError(
            f"feature_columns: {missing[:_MAX_NAMED]!r} not found in cells; available: "
            f"{list(cells.columns)[:20]!r}"
        )
    if id_column in columns:
        raise ValueError(f"feature_columns: the id column {id_column!r} cannot be a feature")
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise ValueError(f"feature_columns: duplicated entries {dup!r}")
    non_numeric = [c for c in columns if not pd.api.types.is_numeric_dtype(cells[c])]
    if non_numeric:
        raise ValueError(
            f"feature_columns: expected numeric columns, got non-numeric {non_numeric!r} "
            f"(dtypes {[str(cells[c].dtype) for c in non_numeric]})"
        )
    return columns


def _constant_mask(values: np.ndarray) -> np.ndarray:
    """Per column: zero range, or variance negligible relative to the squared mean."""
    ptp = np.ptp(values, axis=0)
    var = values.var(axis=0)
    mean = values.mean(axis=0)
    return (ptp == 0) | (var <= 1e-12 * (mean**2 + 1.0))


def _image_index(image_ids: Sequence[str]) -> pd.Index:
    """``image_ids`` as an index, the row order of the profiles; refuses none or duplicates."""
    ids = pd.Index(list(image_ids))
    if len(ids) == 0:
        raise ValueError("image_ids: expected at least one image id, got none")
    if ids.has_duplicates:
        dup = ids[ids.duplicated()].unique().tolist()
        raise ValueError(f"image_ids: expected unique ids, got duplicates {dup[:_MAX_NAMED]!r}")
    return ids


def _image_codes(cells: pd.DataFrame, id_column: str, ids: pd.Index) -> np.ndarray:
    """Per cell row, the position of its image in ``ids``; refuses cells of unknown images."""
    codes = ids.get_indexer(cells[id_column])
    unknown = codes < 0
    if unknown.any():
        names = pd.unique(cells[id_column].to_numpy()[unknown])
        raise ValueError(
            f"cells: {int(unknown.sum())} cell rows have a {id_column!r} not in image_ids "
            f"({len(names)} distinct, e.g. {list(names[:_MAX_NAMED])!r})"
        )
    return codes


def _aggregate(
    cells: pd.DataFrame, columns: list[str], codes: np.ndarray, n_images: int, how: str
) -> np.ndarray:
    """(n_images, n_features) float64: per image the mean or median of its cells' finite
    values (NaN and +-inf are ignored); images without cells get a NaN row."""
    values = cells[columns].to_numpy(dtype=np.float64, copy=True, na_value=np.nan)
    values[~np.isfinite(values)] = np.nan
    grouped = pd.DataFrame(values).groupby(codes)
    agg = grouped.mean() if how == "mean" else grouped.median()
    return agg.reindex(range(n_images)).to_numpy(dtype=np.float64)  # no cells -> NaN row


def _fill_images_without_cells(table: np.ndarray, has_cells: np.ndarray, ids: pd.Index) -> int:
    """Set the rows of images without cells to the per-feature median of the images with
    cells, in place (NaN rows would drop every feature later); returns how many, with a
    warning naming some."""
    n_without = int((~has_cells).sum())
    if n_without:
        table[~has_cells] = np.median(table[has_cells], axis=0)
        logger.warning(
            "image profiles: %d of %d images have no cells and get the per-feature median, e.g. %s",
            n_without,
            len(ids),
            ids[~has_cells][:_MAX_NAMED].tolist(),
        )
    return n_without


def _profile_report(
    columns: list[str], nan_feature: np.ndarray, constant: np.ndarray, n_without: int
) -> tuple[ProfileReport, list[str]]:
    """The report of the dropped features (NaN ones first, then constant ones, each in input
    order) and the names of the kept features. ``constant`` is over the non-NaN features."""
    after_nan = [c for c, bad in zip(columns, nan_feature, strict=True) if not bad]
    nan_columns = [c for c, bad in zip(columns, nan_feature, strict=True) if bad]
    constant_columns = [c for c, bad in zip(after_nan, constant, strict=True) if bad]
    kept_columns = [c for c, bad in zip(after_nan, constant, strict=True) if not bad]
    report = ProfileReport(
        n_features_in=len(columns),
        n_dropped_nan=len(nan_columns),
        n_dropped_constant=len(constant_columns),
        n_images_without_cells=n_without,
        dropped=[str(c) for c in nan_columns + constant_columns],
    )
    return report, kept_columns


def image_profiles(
    cells: pd.DataFrame,
    image_ids: Sequence[str],
    *,
    how: str = "mean",
    id_column: str = "image_id",
    feature_columns: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, ProfileReport]:
    """One profile row per entry of ``image_ids`` (in that order) from per-cell features.

    ``cells`` has one row per cell, an ``id_column`` naming its image, and numeric features
    (default: every numeric, non-boolean column other than ``id_column`` and
    :data:`META_COLUMNS`). Per image, features are aggregated with ``how`` ("mean" or
    "median"), ignoring NaN and +-inf values of single cells. Then:

    * a feature that is NaN for an image that has cells (all its cells non-finite) is dropped;
    * images without cells are filled with the per-feature median over images with cells;
    * features with zero variance over images (``ptp == 0`` or
      ``var <= 1e-12 * (mean**2 + 1)``) are dropped.

    Returns the profiles (index reset; ``id_column`` first, then the kept features as float64,
    in input column order) and a :class:`ProfileReport`. Raises ValueError when ``id_column``
    is missing, cells name images not in ``image_ids``, or no feature survives.
    """
    if how not in _HOW:
        raise ValueError(f"how: expected one of {_HOW}, got {how!r}")
    if id_column not in cells.columns:
        raise ValueError(
            f"cells: id column {id_column!r} not found; available: {list(cells.columns)[:20]!r}"
        )
    ids = _image_index(image_ids)
    columns = _feature_columns(cells, id_column, feature_columns)
    if not columns:
        raise ValueError(
            f"cells: no numeric feature columns besides {id_column!r} and {META_COLUMNS}"
        )
    codes = _image_codes(cells, id_column, ids)
    if len(cells) == 0:
        raise ValueError("cells: no cell rows; expected at least one cell to build profiles")

    table = _aggregate(cells, columns, codes, len(ids), how)
    has_cells = np.bincount(codes, minlength=len(ids)) > 0
    nan_feature = np.isnan(table[has_cells]).any(axis=0)
    table = table[:, ~nan_feature]
    n_without = _fill_images_without_cells(table, has_cells, ids)
    constant = _constant_mask(table)
    report, kept_columns = _profile_report(columns, nan_feature, constant, n_without)
    logger.info(
        "image profiles (%s over %d cells, %d images): %d features in, %d dropped as NaN, "
        "%d dropped as constant, %d kept; %d images without cells",
        how,
        len(cells),
        len(ids),
        report.n_features_in,
        report.n_dropped_nan,
        report.n_dropped_constant,
        len(kept_columns),
        n_without,
    )
    if not kept_columns:
        raise ValueError(
            f"cells: no feature column survives ({report.n_features_in} in, "
            f"{report.n_dropped_nan} NaN for an image with cells, {report.n_dropped_constant} "
            f"constant over images; {int(has_cells.sum())} of {len(ids)} images have cells)"
        )

    profiles = pd.DataFrame(table[:, ~constant], columns=kept_columns)
    profiles.insert(0, id_column, ids.to_numpy())
    return profiles, report


def aligned_profiles(
    profiles: pd.DataFrame, obs: pd.DataFrame, where: str
) -> tuple[np.ndarray, list[str]]:
    """Profile rows (a table with ``image_id``) in token-store order (the store's token_id is
    the image_id), as float64, and the feature names."""
    table = profiles.set_index("image_id")
    ids = obs["token_id"].astype(str)
    missing = ids[~ids.isin(table.index)]
    if len(missing):
        raise ValueError(
            f"{where}: no profile for tokens {missing.head(5).tolist()}; the token "
            "store and the image store must hold the same images"
        )
    return table.loc[ids].to_numpy(np.float64), list(table.columns)


def measurement_summary(
    timings: Sequence[dict], n_cells: int, how: str, report: ProfileReport, n_features: int
) -> dict[str, object]:
    """One row for the profiles table: backend, images, cells, seconds per image and the
    features kept and dropped. Chunks measured by different backends are refused."""
    backends = {t["backend"] for t in timings if t["n_images"]}
    if len(backends) > 1:
        raise ValueError(
            f"the image chunks were measured by different backends {sorted(backends)}; "
            "set cellprofiler.backend explicitly and re-run cellprofiler_measure"
        )
    n_images = sum(t["n_images"] for t in timings)
    seconds = sum(t["seconds"] for t in timings)
    return {
        "backend": backends.pop() if backends else timings[0]["backend"],
        "n_images": n_images,
        "n_cells": n_cells,
        "seconds_per_image": seconds / max(n_images, 1),
        "aggregate": how,
        "n_features_measured": report.n_features_in,
        "n_dropped_nan": report.n_dropped_nan,
        "n_dropped_constant": report.n_dropped_constant,
        "n_features": n_features,
        "n_images_without_cells": report.n_images_without_cells,
    }
