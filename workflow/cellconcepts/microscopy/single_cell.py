"""The single-cell check (paper Table 3 / Fig. 6E): does a feature's heatmap mark the cells that
were truly perturbed?

Per cell: the mean pixel-level alignment over the cell's mask, compared between background,
truly perturbed and unperturbed cells with one-sided Mann-Whitney U tests, and how well a
label-free "dark" call (alignment below the image's mean cell alignment) recovers the
unperturbed cells (the paper's 'Control' recall).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from cellconcepts.microscopy.heatmaps import upsample_to_pixels

log = logging.getLogger(__name__)

CATEGORIES = ("background", "perturbed", "unperturbed")
# One-sided comparisons (greater, lesser): the feature should mark perturbed cells most.
COMPARISONS = (
    ("perturbed", "unperturbed"),
    ("perturbed", "background"),
    ("unperturbed", "background"),
)


def cell_alignment(heat: np.ndarray, mask: np.ndarray, patch_size: int) -> pd.DataFrame:
    """Mean pixel-level alignment (heat upsampled to pixels) over each labelled region of
    `mask` (H, W): columns cell_label, category ("background" for label 0, else "cell"),
    n_pixels and alignment. The background row is always first (alignment NaN if the image
    has no background pixels); cells follow in label order."""
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask: expected integer cell labels, got dtype {mask.dtype}")
    if mask.ndim != 2:
        raise ValueError(f"mask: expected (H, W), got shape {mask.shape}")
    if mask.size and mask.min() < 0:
        raise ValueError(f"mask: labels must be >= 0 (0 = background), found {mask.min()}")
    pixels = upsample_to_pixels(np.asarray(heat, dtype=np.float64), patch_size)
    if pixels.shape != mask.shape:
        raise ValueError(
            f"heat: grid {np.shape(heat)} x patch size {patch_size} gives {pixels.shape} pixels "
            f"but the mask is {mask.shape}"
        )
    flat = mask.ravel().astype(np.int64)
    counts = np.bincount(flat)
    sums = np.bincount(flat, weights=pixels.ravel(), minlength=len(counts))
    labels = np.union1d([0], np.flatnonzero(counts))
    n_pixels = counts[labels]
    mean = np.full(len(labels), np.nan)
    np.divide(sums[labels], n_pixels, out=mean, where=n_pixels > 0)
    return pd.DataFrame(
        {
            "cell_label": labels.astype(np.int64),
            "category": np.where(labels == 0, "background", "cell"),
            "n_pixels": n_pixels.astype(np.int64),
            "alignment": mean,
        }
    )


class SingleCellCheck(NamedTuple):
    """The three tables of the single-cell check (see `single_cell_check`)."""

    per_cell: pd.DataFrame
    per_image: pd.DataFrame
    tests: pd.DataFrame


def single_cell_check(
    heats: np.ndarray,
    masks: np.ndarray,
    cell_table: pd.DataFrame,
    patch_size: int,
    image_ids: Sequence[object],
) -> SingleCellCheck:
    """Per-cell heatmap alignment by ground-truth category, and how a label-free threshold
    recovers the unperturbed cells (paper Table 3 / Fig. 6E).

    `heats[i]` (grid_h, grid_w) is the heatmap of the image whose cell labels are `masks[i]`
    (H, W); `cell_table` has one row per cell: `row` (index i), `cell_label` (its label in
    masks[i]) and `perturbed` (bool). Every labelled cell of the masks must be in cell_table;
    table rows whose cell has no pixel in the mask are dropped with a warning.

    A cell is *dark* when its alignment is below its image's threshold, the unweighted mean
    alignment of that image's cells. The threshold uses no labels, so the recall it gives is a
    fair measure of how well the heatmap alone separates unperturbed from perturbed cells.

    Returns (tuple-unpackable):
    - per_cell: image_id, row, cell_label (0 = the image's background region, one row per image),
      category (background / perturbed / unperturbed), n_pixels, alignment, dark_threshold and
      dark (nullable boolean; NA for background rows).
    - per_image (like Table 3): image_id, total_cells, perturbed, unperturbed, dark,
      dark_unperturbed, recall (= dark_unperturbed / unperturbed, the paper's 'Control' recall),
      precision (= dark_unperturbed / dark), then a last row with image_id "all" over all images.
    - tests: one row per one-sided Mann-Whitney U test (`alignment_tests`).
    """
    heats = np.asarray(heats)
    if heats.ndim != 3 or np.ndim(masks) != 3 or len(masks) != len(heats):
        raise ValueError(
            f"heats {heats.shape} and masks {np.shape(masks)} must be (n, grid_h, grid_w) and "
            "(n, H, W) with the same n"
        )
    if len(image_ids) != len(heats):
        raise ValueError(f"image_ids: {len(image_ids)} ids for {len(heats)} heatmaps")
    cells = _checked_cell_table(cell_table, len(heats))
    merged = _regions_with_truth(heats, masks, cells, patch_size)
    per_cell = _per_cell_table(merged, image_ids)
    per_image = _per_image_recall(per_cell, image_ids)
    tests = alignment_tests(per_cell)
    overall = per_image.iloc[-1]
    log.info(
        "single-cell check: %d images, %d cells; unperturbed recall among dark cells %.3f, "
        "precision %.3f",
        len(heats),
        int(overall["total_cells"]),
        overall["recall"],
        overall["precision"],
    )
    return SingleCellCheck(per_cell, per_image, tests)


def _regions_with_truth(
    heats: np.ndarray, masks: np.ndarray, cells: pd.DataFrame, patch_size: int
) -> pd.DataFrame:
    """Every region's alignment (cells and each image's background) joined with the cell
    table's ground truth, sorted by (row, cell_label)."""
    frames = []
    for i in tqdm(range(len(heats)), desc="cell alignment", unit="image", leave=False):
        regions = cell_alignment(heats[i], masks[i], patch_size)
        regions.insert(0, "row", i)
        frames.append(regions)
    regions = pd.concat(frames, ignore_index=True)
    merged = regions.merge(cells, on=["row", "cell_label"], how="outer", indicator=True)
    unknown = merged[(merged["_merge"] == "left_only") & (merged["cell_label"] != 0)]
    if len(unknown):
        examples = unknown[["row", "cell_label"]].head(5).to_dict("records")
        raise ValueError(
            f"cell_table: {len(unknown)} labelled cells of the masks have no row (row, cell_label),"
            f" e.g. {examples}; every cell needs a 'perturbed' value"
        )
    absent = merged[merged["_merge"] == "right_only"]
    if len(absent):
        log.warning(
            "cell_table: %d cells have no pixel in their mask and are left out, e.g. %s",
            len(absent),
            absent[["row", "cell_label"]].head(5).to_dict("records"),
        )
    return merged[merged["_merge"] != "right_only"].sort_values(["row", "cell_label"])


def _per_cell_table(merged: pd.DataFrame, image_ids: Sequence[object]) -> pd.DataFrame:
    """One row per region: its category, alignment and the label-free 'dark' call (alignment
    below the unweighted mean alignment of its image's cells)."""
    is_cell = merged["cell_label"].to_numpy() != 0
    perturbed = merged["perturbed"].eq(True).to_numpy()
    category = np.where(~is_cell, "background", np.where(perturbed, "perturbed", "unperturbed"))
    alignment = merged["alignment"].to_numpy()
    rows = merged["row"].to_numpy()
    threshold = (
        pd.Series(np.where(is_cell, alignment, np.nan)).groupby(rows).transform("mean").to_numpy()
    )
    dark = pd.array(alignment < threshold, dtype="boolean")
    dark[~is_cell] = pd.NA
    return pd.DataFrame(
        {
            "image_id": np.asarray(list(image_ids), dtype=object)[rows],
            "row": rows.astype(np.int64),
            "cell_label": merged["cell_label"].to_numpy().astype(np.int64),
            "category": category,
            "n_pixels": merged["n_pixels"].to_numpy().astype(np.int64),
            "alignment": alignment,
            "dark_threshold": threshold,
            "dark": dark,
        }
    ).reset_index(drop=True)


def _checked_cell_table(cell_table: pd.DataFrame, n_images: int) -> pd.DataFrame:
    missing = [c for c in ("row", "cell_label", "perturbed") if c not in cell_table.columns]
    if missing:
        raise ValueError(
            f"cell_table: missing columns {missing}; expected row, cell_label and perturbed"
        )
    cells = cell_table[["row", "cell_label", "perturbed"]].copy()
    for column in ("row", "cell_label"):
        values = pd.to_numeric(cells[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            raise ValueError(
                f"cell_table: column {column!r} must hold integers; row {int(np.argmax(bad))} "
                f"holds {cells[column].iloc[int(np.argmax(bad))]!r}"
            )
        cells[column] = values.astype(np.int64)
    out_of_range = (cells["row"] < 0) | (cells["row"] >= n_images)
    if out_of_range.any():
        at = int(np.argmax(out_of_range))
        raise ValueError(
            f"cell_table: 'row' must index the {n_images} images given; table row {at} has "
            f"row={cells['row'].iloc[at]}"
        )
    if (cells["cell_label"] <= 0).any():
        at = int(np.argmax(cells["cell_label"] <= 0))
        raise ValueError(
            f"cell_table: 'cell_label' must be > 0 (0 is background); table row {at} has "
            f"{cells['cell_label'].iloc[at]}"
        )
    flags = cells["perturbed"]
    valid = flags.map(lambda v: isinstance(v, bool | np.bool_) or v in (0, 1))
    if flags.isna().any() or not valid.all():
        at = int(np.argmax(flags.isna().to_numpy() | ~valid.to_numpy()))
        raise ValueError(
            f"cell_table: 'perturbed' must be boolean; table row {at} holds {flags.iloc[at]!r}"
        )
    cells["perturbed"] = flags.astype(bool)
    duplicated = cells.duplicated(["row", "cell_label"])
    if duplicated.any():
        at = int(np.argmax(duplicated))
        raise ValueError(
            f"cell_table: (row, cell_label) must be unique; table row {at} repeats "
            f"({cells['row'].iloc[at]}, {cells['cell_label'].iloc[at]})"
        )
    return cells


def _per_image_recall(per_cell: pd.DataFrame, image_ids: Sequence[object]) -> pd.DataFrame:
    cells = per_cell[per_cell["category"] != "background"]
    dark = cells["dark"].fillna(False).to_numpy(dtype=bool)
    unperturbed = (cells["category"] == "unperturbed").to_numpy()
    counts = pd.DataFrame(
        {
            "row": cells["row"].to_numpy(),
            "total_cells": 1,
            "perturbed": ~unperturbed,
            "unperturbed": unperturbed,
            "dark": dark,
            "dark_unperturbed": dark & unperturbed,
        }
    )
    per_row = counts.groupby("row").sum().reindex(range(len(image_ids)), fill_value=0)
    per_row = per_row.astype(np.int64)
    total = per_row.sum(axis=0).to_frame().T
    table = pd.concat([per_row, total], ignore_index=True)
    table.insert(0, "image_id", [str(i) for i in image_ids] + ["all"])
    table["recall"] = _ratio(table["dark_unperturbed"], table["unperturbed"])
    table["precision"] = _ratio(table["dark_unperturbed"], table["dark"])
    return table


def _ratio(numerator: pd.Series, denominator: pd.Series) -> np.ndarray:
    out = np.full(len(numerator), np.nan)
    np.divide(
        numerator.to_numpy(dtype=float),
        denominator.to_numpy(dtype=float),
        out=out,
        where=denominator.to_numpy() > 0,
    )
    return out


def alignment_tests(per_cell: pd.DataFrame) -> pd.DataFrame:
    """One-sided Mann-Whitney U tests (scipy, alternative="greater") of alignment between the
    categories of `per_cell`: perturbed > unperturbed, perturbed > background and
    unperturbed > background. Columns: comparison, greater, lesser, n_/mean_ of each, statistic
    (U of `greater`), p_value and stars; NaN where a category has no values."""
    rows = []
    for greater, lesser in COMPARISONS:
        x = category_values(per_cell, greater)
        y = category_values(per_cell, lesser)
        if len(x) and len(y):
            result = stats.mannwhitneyu(x, y, alternative="greater")
            statistic, p_value = float(result.statistic), float(result.pvalue)
        else:
            log.warning("Mann-Whitney %s > %s: a category has no cells", greater, lesser)
            statistic = p_value = np.nan
        rows.append(
            {
                "comparison": f"{greater} > {lesser}",
                "greater": greater,
                "lesser": lesser,
                "n_greater": len(x),
                "n_lesser": len(y),
                "mean_greater": float(np.mean(x)) if len(x) else np.nan,
                "mean_lesser": float(np.mean(y)) if len(y) else np.nan,
                "statistic": statistic,
                "p_value": p_value,
                "stars": significance_stars(p_value),
            }
        )
    return pd.DataFrame(rows)


def category_values(per_cell: pd.DataFrame, category: str) -> np.ndarray:
    values = per_cell.loc[per_cell["category"] == category, "alignment"].to_numpy(dtype=float)
    return values[~np.isnan(values)]


def significance_stars(p_value: float) -> str:
    """Star notation: **** p <= 1e-4, *** <= 1e-3, ** <= 1e-2, * <= 0.05, else ns ("n/a" for
    NaN)."""
    if p_value is None or np.isnan(p_value):
        return "n/a"
    for limit, stars in ((1e-4, "****"), (1e-3, "***"), (1e-2, "**"), (0.05, "*")):
        if p_value <= limit:
            return stars
    return "ns"


# --------------------------------------------------------------------------- figures


def single_cell_by_label(
    selected: pd.DataFrame,
    heats: np.ndarray,
    masks: np.ndarray,
    cells: pd.DataFrame,
    patch_size: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The single-cell check of every label's selected images: per-cell alignment, per-image
    recall (with an 'all' row per label) and the tests per label, with the recall and
    precision a random 'dark' call with the same number of dark cells would reach."""
    per_cell, per_image, tests = [], [], []
    for label, rows in selected.groupby("label", sort=True):
        positions = rows.index.to_numpy()
        image_rows = rows["row"].to_numpy()
        label_cells = cells[cells["image_index"].isin(image_rows)].copy()
        label_cells["row"] = (
            pd.Series(range(len(image_rows)), index=image_rows)
            .loc[label_cells["image_index"].to_numpy()]
            .to_numpy()
        )
        result = single_cell_check(
            heats[positions], masks[image_rows], label_cells, patch_size, rows["image_id"].tolist()
        )
        feature = int(rows["feature"].iloc[0])
        for frame, out in zip(result, (per_cell, per_image, tests), strict=True):
            out.append(frame.assign(label=label, feature=feature))
    images = pd.concat(per_image, ignore_index=True)
    summary = pd.concat(tests, ignore_index=True)
    overall = images[images["image_id"] == "all"].set_index("label")
    overall["recall_by_chance"] = overall["dark"] / overall["total_cells"]
    overall["precision_by_chance"] = overall["unperturbed"] / overall["total_cells"]
    summary = summary.merge(
        overall[["recall", "recall_by_chance", "precision", "precision_by_chance"]],
        left_on="label",
        right_index=True,
        how="left",
    )
    return pd.concat(per_cell, ignore_index=True), images, summary
