"""Token heatmaps (paper Fig. 5) and the single-cell check (paper Table 3 / Fig. 6E).

A heatmap is the cosine of a feature direction with each centred patch token of an image, on the
ViT's patch grid. It is compared with the image in two ways:

- per channel: the Pearson correlation between the heatmap and the channel averaged over each
  patch (which channel the feature "looks at"; negative with all channels = background);
- per cell: the mean pixel-level alignment over each cell's mask, compared between background,
  truly perturbed and unperturbed cells with one-sided Mann-Whitney U tests, and how well a
  label-free "dark" call (alignment below the image's mean cell alignment) recovers the
  unperturbed cells (the paper's 'Control' recall).

Pure numpy/scipy/pandas/matplotlib; figures are written with the Agg backend.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from cellconcepts.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

PathLike = str | Path

CATEGORIES = ("background", "perturbed", "unperturbed")
# One-sided comparisons (greater, lesser): the feature should mark perturbed cells most.
COMPARISONS = (
    ("perturbed", "unperturbed"),
    ("perturbed", "background"),
    ("unperturbed", "background"),
)
CATEGORY_COLOURS = {"background": "0.45", "perturbed": "tab:red", "unperturbed": "tab:blue"}

# Composite colours, as in the RxRx1 convention (rxrx1-utils): nucleus blue, ER green, actin red,
# RNA cyan, mitochondria magenta, Golgi/membrane yellow. Channels are matched by name (first
# matching pattern, on the lower-cased name with punctuation turned into spaces); if any name
# matches none, or two names match the same colour, every channel takes the colour of its
# position in RxRx1 order instead (POSITIONAL_COLOURS, cycling for more than six channels).
CHANNEL_COLOURS: tuple[tuple[str, str, tuple[float, float, float]], ...] = (
    ("rna", r"\b(rna|nucleol\w*|syto\w*)\b", (0.18, 1.00, 0.99)),
    ("nucleus", r"\b(nucle\w*|dna|hoechst|dapi)\b", (0.07, 0.00, 0.98)),
    ("er", r"\b(er|endoplasmic|reticulum|cona|concanavalin)\b", (0.16, 1.00, 0.12)),
    ("actin", r"\b(actin|phalloidin)\b", (1.00, 0.00, 0.10)),
    ("mitochondria", r"\bmito\w*", (0.98, 0.00, 0.99)),
    ("golgi", r"\b(golgi|membrane|plasma|wga|agp)\b", (1.00, 1.00, 0.16)),
)
POSITIONAL_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.07, 0.00, 0.98),  # 1 nucleus (Hoechst)
    (0.16, 1.00, 0.12),  # 2 ER (ConA)
    (1.00, 0.00, 0.10),  # 3 actin (phalloidin)
    (0.18, 1.00, 0.99),  # 4 RNA (Syto14)
    (0.98, 0.00, 0.99),  # 5 mitochondria (MitoTracker)
    (1.00, 1.00, 0.16),  # 6 Golgi/membrane (WGA)
)
# Per-channel display scaling: these percentiles of the channel map to 0 and 1.
DISPLAY_PERCENTILES = (1.0, 99.5)


# --------------------------------------------------------------------------- alignment


def patch_alignment(
    patch_tokens: np.ndarray, direction: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """Cosine of `direction` with each centred patch token, `patch_token - centre`.

    `patch_tokens` is (n, grid_h, grid_w, d) (any leading shape works; the last axis is d) and
    the result has the leading shape. `centre` is (d,) or broadcasts against the tokens, e.g.
    one control mean per grid position (grid_h, grid_w, d), which removes the positional part of
    ViT patch tokens. A patch equal to its centre has no direction and gets 0.
    """
    tokens = np.asarray(patch_tokens)
    direction = np.asarray(direction, dtype=np.float64)
    centre = np.asarray(centre, dtype=np.float64)
    if tokens.ndim < 1:
        raise ValueError("patch_tokens: expected an array (n, grid_h, grid_w, d)")
    d = tokens.shape[-1]
    if direction.shape != (d,):
        raise ValueError(
            f"direction: expected shape ({d},) to match patch tokens, got {direction.shape}"
        )
    if centre.ndim < 1 or centre.shape[-1] != d or centre.ndim > tokens.ndim:
        raise ValueError(
            f"centre: expected shape ({d},) or per grid position (grid_h, grid_w, {d}) to match "
            f"patch tokens, got {centre.shape}"
        )
    direction_norm = float(np.linalg.norm(direction))
    if not np.isfinite(direction_norm) or direction_norm == 0.0:
        raise ValueError(
            f"direction: expected a finite non-zero vector, its norm is {direction_norm}"
        )
    centred = tokens.astype(np.float64) - centre
    norms = np.linalg.norm(centred, axis=-1)
    dots = centred @ (direction / direction_norm)
    cosine = np.zeros(norms.shape, dtype=np.float64)
    np.divide(dots, norms, out=cosine, where=norms > 0)
    return np.clip(cosine, -1.0, 1.0)


def upsample_to_pixels(heat: np.ndarray, patch_size: int) -> np.ndarray:
    """Nearest-neighbour upsampling of a patch-grid map, (..., gh, gw) -> (..., gh*p, gw*p):
    every pixel takes the value of the patch it lies in."""
    heat = np.asarray(heat)
    _check_patch_size(patch_size)
    if heat.ndim not in (2, 3):
        raise ValueError(
            f"heat: expected (grid_h, grid_w) or (n, grid_h, grid_w), got shape {heat.shape}"
        )
    return np.repeat(np.repeat(heat, patch_size, axis=-2), patch_size, axis=-1)


def pool_to_patches(image: np.ndarray, patch_size: int) -> np.ndarray:
    """Block mean over each patch: (C, H, W) or (H, W) -> (C, H/p, W/p) (C = 1 for 2-D input)."""
    image = np.asarray(image, dtype=np.float64)
    _check_patch_size(patch_size)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"image: expected (C, H, W) or (H, W), got shape {image.shape}")
    channels, height, width = image.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image: height and width ({height}x{width}) must be multiples of the patch size "
            f"{patch_size}"
        )
    blocks = image.reshape(
        channels, height // patch_size, patch_size, width // patch_size, patch_size
    )
    return blocks.mean(axis=(2, 4))


def _check_patch_size(patch_size: int) -> None:
    if isinstance(patch_size, bool) or not isinstance(patch_size, int | np.integer):
        raise TypeError(f"patch_size: expected a positive integer, got {patch_size!r}")
    if patch_size < 1:
        raise ValueError(f"patch_size: expected a positive integer, got {patch_size}")


# --------------------------------------------------------------------------- channels


def channel_correlations(heat: np.ndarray, image: np.ndarray, patch_size: int) -> np.ndarray:
    """Pearson r between the heatmap (grid_h, grid_w) and each channel of `image` (C, H, W)
    averaged over each patch; NaN where the heatmap or the pooled channel is constant."""
    heat = np.asarray(heat, dtype=np.float64)
    pooled = pool_to_patches(image, patch_size)
    if heat.shape != pooled.shape[1:]:
        raise ValueError(
            f"heat: shape {heat.shape} does not match the image's patch grid {pooled.shape[1:]} "
            f"(image {np.shape(image)}, patch size {patch_size})"
        )
    x = heat.ravel() - heat.mean()
    y = pooled.reshape(len(pooled), -1)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x @ x) * np.einsum("ij,ij->i", y, y))
    constant = (np.ptp(heat) == 0) | (np.ptp(pooled.reshape(len(pooled), -1), axis=1) == 0)
    r = np.full(len(pooled), np.nan)
    np.divide(y @ x, denominator, out=r, where=~constant & (denominator > 0))
    return np.clip(r, -1.0, 1.0)


def channel_correlation_table(
    heats: np.ndarray,
    images: np.ndarray,
    patch_size: int,
    channel_names: Sequence[str],
    image_ids: Sequence[object],
) -> pd.DataFrame:
    """One row per heatmap: `image_id`, the Pearson r with each channel (a column per channel
    name), `top_channel` (largest r) and `top_abs_channel` (largest |r|); the top columns are
    missing where every r is NaN. `images[i]` is the image of `heats[i]`."""
    heats = np.asarray(heats)
    names = [str(name) for name in channel_names]
    if heats.ndim != 3:
        raise ValueError(f"heats: expected (n, grid_h, grid_w), got shape {heats.shape}")
    if len(images) != len(heats) or len(image_ids) != len(heats):
        raise ValueError(
            f"heats ({len(heats)}), images ({len(images)}) and image_ids ({len(image_ids)}) "
            "must have one entry per heatmap"
        )
    _check_channel_names(names, np.shape(images)[1])
    reserved = {"image_id", "top_channel", "top_abs_channel"} & set(names)
    if reserved:
        raise ValueError(f"channel_names: {sorted(reserved)} clash with the table's own columns")
    r = np.empty((len(heats), len(names)))
    for i in range(len(heats)):
        r[i] = channel_correlations(heats[i], images[i], patch_size)
    table = pd.DataFrame(r, columns=names)
    table.insert(0, "image_id", list(image_ids))
    table["top_channel"] = [_largest(row, names) for row in r]
    table["top_abs_channel"] = [_largest(np.abs(row), names) for row in r]
    return table


def _largest(values: np.ndarray, names: Sequence[str]) -> str | None:
    """Name of the largest value, ignoring NaN (None when all are NaN)."""
    if np.all(np.isnan(values)):
        return None
    return names[int(np.nanargmax(values))]


def _check_channel_names(names: Sequence[str], n_channels: int) -> None:
    if len(names) != n_channels:
        raise ValueError(
            f"channel_names: {len(names)} names {list(names)} for images with {n_channels} channels"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"channel_names: names must be unique, got {list(names)}")


# --------------------------------------------------------------------------- single cells


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
    merged = merged[merged["_merge"] != "right_only"].sort_values(["row", "cell_label"])
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

    per_cell = pd.DataFrame(
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
        x = _category_values(per_cell, greater)
        y = _category_values(per_cell, lesser)
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


def _category_values(per_cell: pd.DataFrame, category: str) -> np.ndarray:
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


def channel_colours(channel_names: Sequence[str]) -> np.ndarray:
    """RGB colour (C, 3) of each channel in the composite: by name (CHANNEL_COLOURS), else by
    position in RxRx1 order (POSITIONAL_COLOURS) when the names do not all match distinctly."""
    matched = []
    for name in channel_names:
        text = re.sub(r"[^a-z0-9]+", " ", str(name).lower())
        hit = next((key for key, pattern, _ in CHANNEL_COLOURS if re.search(pattern, text)), None)
        matched.append(hit)
    if None not in matched and len(set(matched)) == len(matched):
        by_key = {key: colour for key, _, colour in CHANNEL_COLOURS}
        return np.array([by_key[key] for key in matched], dtype=np.float64)
    return np.array(
        [POSITIONAL_COLOURS[i % len(POSITIONAL_COLOURS)] for i in range(len(channel_names))],
        dtype=np.float64,
    )


def _display_scale(channel: np.ndarray) -> np.ndarray:
    """Map DISPLAY_PERCENTILES of the channel to 0 and 1 (clipped); a flat channel gives 0."""
    channel = np.asarray(channel, dtype=np.float64)
    low, high = np.percentile(channel, DISPLAY_PERCENTILES)
    if high <= low:
        return np.zeros_like(channel)
    return np.clip((channel - low) / (high - low), 0.0, 1.0)


def composite_rgb(image: np.ndarray, channel_names: Sequence[str]) -> np.ndarray:
    """Composite (H, W, 3) in [0, 1] of a (C, H, W) image: each channel scaled to its own
    display percentiles, tinted with `channel_colours` and summed (clipped at 1)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image: expected (C, H, W), got shape {image.shape}")
    _check_channel_names([str(n) for n in channel_names], image.shape[0])
    colours = channel_colours(channel_names)
    rgb = np.zeros((*image.shape[1:], 3), dtype=np.float64)
    for channel, colour in zip(image, colours, strict=True):
        rgb += _display_scale(channel)[..., None] * colour
    return np.clip(rgb, 0.0, 1.0)


def _stem(path_stem: PathLike) -> Path:
    path = Path(path_stem)
    return path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path


def _save_figure(fig: plt.Figure, path_stem: PathLike) -> list[Path]:
    """Write `<stem>.png` and `<stem>.pdf` (each atomically) and close the figure."""
    stem = _stem(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for fmt in ("png", "pdf"):
            target = stem.with_name(f"{stem.name}.{fmt}")
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150)
            written.append(target)
    finally:
        plt.close(fig)
    return written


def plot_feature_heatmaps(
    path_stem: PathLike,
    images: np.ndarray,
    heats: np.ndarray,
    channel_names: Sequence[str],
    correlations: np.ndarray | pd.DataFrame,
    titles: Sequence[str],
    patch_size: int,
) -> list[Path]:
    """Paper Fig. 5: one column per image. Row 0: heatmap (diverging, centred at 0, limits
    shared by all images) over a translucent composite; row 1: the composite; rows 2..: each
    channel in greys with its heatmap Pearson r. `correlations` is (n, C) or a table with a
    column per channel name. Returns the PNG and PDF paths written."""
    images = np.asarray(images)
    heats = np.asarray(heats, dtype=np.float64)
    names = [str(n) for n in channel_names]
    if images.ndim != 4 or heats.ndim != 3 or len(images) != len(heats):
        raise ValueError(
            f"images {images.shape} and heats {heats.shape} must be (n, C, H, W) and "
            "(n, grid_h, grid_w) with the same n"
        )
    _check_channel_names(names, images.shape[1])
    if isinstance(correlations, pd.DataFrame):
        correlations = correlations[names].to_numpy(dtype=np.float64)
    correlations = np.asarray(correlations, dtype=np.float64)
    if correlations.shape != (len(images), len(names)):
        raise ValueError(
            f"correlations: expected shape {(len(images), len(names))}, got {correlations.shape}"
        )
    if len(titles) != len(images):
        raise ValueError(f"titles: {len(titles)} titles for {len(images)} images")
    height, width = images.shape[2:]
    if heats.shape[1:] != (height // patch_size, width // patch_size):
        raise ValueError(
            f"heats: grid {heats.shape[1:]} does not match {height}x{width} images with patch "
            f"size {patch_size}"
        )

    limit = float(np.nanmax(np.abs(heats))) if heats.size else 1.0
    limit = limit if np.isfinite(limit) and limit > 0 else 1.0
    n_rows, n_cols = 2 + len(names), max(len(images), 1)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(1.9 * n_cols + 0.8, 1.9 * n_rows),
        squeeze=False,
        layout="constrained",
    )
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    mappable = None
    for j, (image, heat) in enumerate(zip(images, heats, strict=True)):
        rgb = composite_rgb(image, names)
        axes[0, j].imshow(rgb, alpha=0.55)
        mappable = axes[0, j].imshow(
            heat,
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            alpha=0.75,
            extent=extent,
            interpolation="nearest",
        )
        axes[0, j].set_title(str(titles[j]), fontsize=7)
        axes[1, j].imshow(rgb)
        axes[1, j].set_title("composite", fontsize=7)
        for c, name in enumerate(names):
            axes[2 + c, j].imshow(_display_scale(image[c]), cmap="gray", vmin=0, vmax=1)
            axes[2 + c, j].set_title(f"{name}  r={correlations[j, c]:.2f}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if len(images) == 0:
        axes[0, 0].set_title("no images", fontsize=7)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes[0, :].tolist(), shrink=0.9, label="cosine")
    return _save_figure(fig, path_stem)


def plot_single_cell_histograms(
    path_stem: PathLike, per_cell: pd.DataFrame, title: str
) -> list[Path]:
    """Paper Fig. 6E: overlaid density histograms of alignment for background, perturbed and
    unperturbed regions, their means as solid vertical lines, and the one-sided Mann-Whitney
    results (star notation) in the legend. Returns the PNG and PDF paths written."""
    missing = [c for c in ("category", "alignment") if c not in per_cell.columns]
    if missing:
        raise ValueError(f"per_cell: missing columns {missing}; expected category and alignment")
    values = {category: _category_values(per_cell, category) for category in CATEGORIES}
    pooled = np.concatenate(list(values.values()))
    if pooled.size and np.ptp(pooled) > 0:
        bins = np.linspace(pooled.min(), pooled.max(), 31)
    else:
        centre = float(pooled[0]) if pooled.size else 0.0
        bins = np.linspace(centre - 0.5, centre + 0.5, 31)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for category in CATEGORIES:
        x = values[category]
        if not len(x):
            continue
        colour = CATEGORY_COLOURS[category]
        label = f"{category} (n={len(x)})"
        ax.hist(x, bins=bins, density=True, alpha=0.4, color=colour, label=label)
        ax.axvline(float(np.mean(x)), color=colour, linestyle="-", linewidth=1.8)
    tests = alignment_tests(per_cell)
    for _, test in tests.iterrows():
        p_text = "n/a" if np.isnan(test["p_value"]) else f"p={test['p_value']:.2g}"
        ax.plot([], [], " ", label=f"{test['comparison']}: {test['stars']} ({p_text})")
    ax.set_xlabel("alignment (mean cosine over the region)")
    ax.set_ylabel("density")
    ax.set_title(f"{title}\none-sided Mann-Whitney U; lines: category means", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save_figure(fig, path_stem)
