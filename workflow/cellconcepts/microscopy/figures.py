"""Figures of the microscopy branch: token heatmaps over channel composites (paper Fig. 5), the
single-cell alignment histograms (Fig. 6E) and probe accuracy per layer."""

from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cellconcepts.files import PathLike  # noqa: E402
from cellconcepts.microscopy.heatmaps import check_channel_names  # noqa: E402
from cellconcepts.microscopy.single_cell import (  # noqa: E402
    CATEGORIES,
    alignment_tests,
    category_values,
)
from cellconcepts.report.figures import save_figure  # noqa: E402

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
    check_channel_names([str(n) for n in channel_names], image.shape[0])
    colours = channel_colours(channel_names)
    rgb = np.zeros((*image.shape[1:], 3), dtype=np.float64)
    for channel, colour in zip(image, colours, strict=True):
        rgb += _display_scale(channel)[..., None] * colour
    return np.clip(rgb, 0.0, 1.0)


def plot_feature_heatmaps(
    png_path: PathLike,
    images: np.ndarray,
    heats: np.ndarray,
    channel_names: Sequence[str],
    correlations: np.ndarray | pd.DataFrame,
    titles: Sequence[str],
    patch_size: int,
) -> None:
    """Paper Fig. 5: one column per image. Row 0: heatmap (diverging, centred at 0, limits
    shared by all images) over a translucent composite; row 1: the composite; rows 2..: each
    channel in greys with its heatmap Pearson r. `correlations` is (n, C) or a table with a
    column per channel name. Written as PNG and a PDF beside it."""
    images = np.asarray(images)
    heats = np.asarray(heats, dtype=np.float64)
    names = [str(n) for n in channel_names]
    if images.ndim != 4 or heats.ndim != 3 or len(images) != len(heats):
        raise ValueError(
            f"images {images.shape} and heats {heats.shape} must be (n, C, H, W) and "
            "(n, grid_h, grid_w) with the same n"
        )
    check_channel_names(names, images.shape[1])
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
    save_figure(fig, png_path)


def plot_single_cell_histograms(png_path: PathLike, per_cell: pd.DataFrame, title: str) -> None:
    """Paper Fig. 6E: overlaid density histograms of alignment for background, perturbed and
    unperturbed regions, their means as solid vertical lines, and the one-sided Mann-Whitney
    results (star notation) in the legend. Written as PNG and a PDF beside it."""
    missing = [c for c in ("category", "alignment") if c not in per_cell.columns]
    if missing:
        raise ValueError(f"per_cell: missing columns {missing}; expected category and alignment")
    values = {category: category_values(per_cell, category) for category in CATEGORIES}
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
    fig.tight_layout()
    # Below the axes, clear of the histograms.
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    save_figure(fig, png_path, tight_bbox=True)


def plot_layer_probing(
    probes: pd.DataFrame, chosen: int, layer_task: str, png_path: PathLike
) -> None:
    """Probe BTA against layer, one line per task, the chosen layer marked."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for task, table in probes.groupby("task", sort=False):
        table = table.sort_values("layer")
        ax.plot(
            table["layer"],
            table["bta"],
            marker="o",
            linewidth=2.5 if task == layer_task else 1.2,
            label=task,
        )
    from matplotlib.ticker import MaxNLocator

    ax.axvline(chosen, color="grey", linestyle=":", label=f"chosen layer {chosen}")
    ax.set_xlabel("layer (block output)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("balanced test accuracy")
    ax.set_ylim(0, 1.05)
    fig.tight_layout()
    # Right of the axes, clear of the lines.
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, png_path, tight_bbox=True)
