"""CellProfiler vs dictionary features (paper Fig. 2): per-label best avg selectivity side by
side, its Pearson correlation with a confidence interval, and selectivity against sparsity."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from cellconcepts.files import PathLike
from cellconcepts.report.figures import save_figure, variant_label, variant_style
from cellconcepts.variant import Variant

log = logging.getLogger(__name__)

CP = "CellProfiler"


def pearson_with_ci(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Pearson r, its two-sided p-value and the Fisher-z confidence interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {
            "n_labels": n,
            "pearson_r": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p": np.nan,
        }
    result = stats.pearsonr(x, y)
    ci = result.confidence_interval(confidence_level=confidence)
    return {
        "n_labels": n,
        "pearson_r": float(result.statistic),
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "p": float(result.pvalue),
    }


def per_label_table(best: Mapping[str, pd.DataFrame], task: str) -> pd.DataFrame:
    """One row per label of `task`: each method's best avg selectivity (columns by method)."""
    columns = []
    for name, table in best.items():
        rows = table[table["task"] == task]
        if rows.empty:
            raise ValueError(f"best selectivity of {name}: no rows for task {task!r}")
        columns.append(rows.set_index("label")["best_avg"].rename(name))
    merged = pd.concat(columns, axis=1, join="inner")
    merged.index = merged.index.astype(str)
    return merged.sort_values(CP, ascending=False).rename_axis("label").reset_index()


def correlation_table(per_label: pd.DataFrame) -> pd.DataFrame:
    """Pearson r (95% CI) between CellProfiler's and each dictionary's per-label best scores."""
    rows = []
    for name in per_label.columns.drop(["label", CP]):
        rows.append(
            {
                "variant": name,
                **pearson_with_ci(per_label[CP].to_numpy(), per_label[name].to_numpy()),
                "mean_best_avg_cp": float(per_label[CP].mean()),
                "mean_best_avg_dictionary": float(per_label[name].mean()),
            }
        )
    return pd.DataFrame(rows)


def dictionary_sparsity_points(
    codes: Mapping[str, sp.spmatrix], per_label: pd.DataFrame
) -> pd.DataFrame:
    """Mean active count per token and mean per-label best score of each dictionary variant."""
    rows = []
    for name, matrix in codes.items():
        active = (matrix != 0).sum() / matrix.shape[0]
        rows.append(
            {
                "method": name,
                "mean_active": float(active),
                "mean_best_avg": float(per_label[name].mean()),
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Comparison:
    """The tables of paper Fig. 2."""

    per_label: pd.DataFrame  # label, then each method's best avg selectivity (`per_label_table`)
    correlations: pd.DataFrame  # one row per dictionary (`correlation_table`)
    points: pd.DataFrame  # each dictionary's sparsity point (`dictionary_sparsity_points`)
    curve: pd.DataFrame  # CellProfiler's sweep then the dictionaries' points: method,
    # mean_active, mean_best_avg


def compare_with_dictionaries(
    cp_best: pd.DataFrame,
    best: Mapping[str, pd.DataFrame],
    codes: Mapping[str, sp.spmatrix],
    cp_sweep: pd.DataFrame,
    task: str,
) -> Comparison:
    """CellProfiler's best avg selectivity per label of ``task`` beside each dictionary's
    (``best`` and ``codes`` by variant name, in the same order), their Pearson r with a 95% CI
    (logged), and selectivity against sparsity: CellProfiler's sweep and a point per
    dictionary."""
    tables = {CP: cp_best, **best}
    labels = per_label_table(tables, task)
    correlations = correlation_table(labels)
    points = dictionary_sparsity_points(codes, labels)
    curve = pd.concat([cp_sweep[["method", "mean_active", "mean_best_avg"]], points])
    for row in correlations.itertuples():
        log.info(
            "%s: Pearson r %.3f [%.3f, %.3f] over %d labels",
            row.variant,
            row.pearson_r,
            row.ci_low,
            row.ci_high,
            row.n_labels,
        )
    return Comparison(labels, correlations, points, curve)


def _variant_style(name: str) -> dict[str, object]:
    if name == CP:
        return {"color": "black", "linestyle": "-"}
    variant = Variant.parse(name)
    return variant_style(variant.method, variant.whitening)


def _label(name: str) -> str:
    if name == CP:
        return CP
    variant = Variant.parse(name)
    return f"{variant_label(variant.method, variant.whitening)} k={variant.sparsity}"


def _models(names) -> dict[tuple[str, str, int], list[str]]:
    """Variant names by model (method, whitening, sparsity), seeds together, in legend order."""
    from cellconcepts.report.figures import model_key, model_order

    grouped: dict[tuple[str, str, int], list[str]] = {}
    for name in names:
        grouped.setdefault(model_key(name), []).append(name)
    return {key: grouped[key] for key in sorted(grouped, key=model_order)}


def plot_comparison(
    per_label: pd.DataFrame,
    correlations: pd.DataFrame,
    cp_sweep: pd.DataFrame,
    dictionary_points: pd.DataFrame,
    png_path: PathLike,
    *,
    title: str,
) -> None:
    """(A) ordered per-label best scores by label rank, (B) mean best score vs mean active
    count, (C) per-label scatter CP vs the first ICFL + PCA variant with Pearson r. A model
    (method, whitening, sparsity) is drawn once: in (A) the mean over its seeds of each seed's
    rank-r label with the seeds' range as a band, in (B) its seeds' mean as a large marker and
    each seed as a small one. One legend for the figure, below the panels."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from cellconcepts.report.figures import (
        legend_below,
        model_label,
        model_style,
        seed_band,
        seed_note,
    )

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    models = _models([n for n in per_label.columns.drop("label") if n != CP])
    sparsities = [key[2] for key in models]
    if CP in per_label.columns:
        values = np.sort(per_label[CP].to_numpy())[::-1]
        axes[0].plot(
            np.arange(1, len(values) + 1),
            values,
            marker="o",
            markevery=5,
            label=CP,
            **_variant_style(CP),
        )
    n_seeds = 1
    for key, names in models.items():
        style = model_style(*key, sparsities)
        marker = {
            "marker": "o" if key[1] == "pca" else "s",
            "markerfacecolor": style["color"] if key[1] == "pca" else "white",
        }
        curves = np.stack([np.sort(per_label[n].to_numpy(dtype=float))[::-1] for n in names])
        n_seeds = max(n_seeds, len(names))
        ranks = np.arange(1, curves.shape[1] + 1)
        axes[0].plot(
            ranks,
            np.nanmean(curves, axis=0),
            markevery=5,
            label=model_label(*key),
            **marker,
            **style,
        )
        if len(names) > 1:
            seed_band(
                axes[0],
                ranks,
                np.nanmin(curves, axis=0),
                np.nanmax(curves, axis=0),
                style["color"],
            )
        points = dictionary_points[dictionary_points["method"].isin(names)]
        axes[1].plot(
            points["mean_active"],
            points["mean_best_avg"],
            linestyle="none",
            markersize=3,
            **marker,
            color=style["color"],
        )
        axes[1].plot(
            points["mean_active"].mean(),
            points["mean_best_avg"].mean(),
            linestyle="none",
            markersize=8,
            **marker,
            color=style["color"],
        )
    axes[0].set(xlabel="label rank", ylabel="best avg selectivity", title="(A) per label")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))

    axes[1].plot(cp_sweep["mean_active"], cp_sweep["mean_best_avg"], "o-", color="black", label=CP)
    axes[1].set(
        xscale="log",
        xlabel="mean active features per image",
        ylabel="mean best avg selectivity",
        title="(B) selectivity vs sparsity",
    )

    preferred = [n for n in correlations["variant"] if n.startswith("icfl_pca")]
    shown = (preferred or list(correlations["variant"]))[0]
    row = correlations.set_index("variant").loc[shown]
    axes[2].scatter(per_label[CP], per_label[shown], s=12, color=_variant_style(shown)["color"])
    low = float(min(per_label[CP].min(), per_label[shown].min()))
    high = float(max(per_label[CP].max(), per_label[shown].max()))
    axes[2].plot([low, high], [low, high], color="grey", linewidth=0.8)
    axes[2].set(
        xlabel="CellProfiler best avg selectivity",
        ylabel=f"{_label(shown)}, seed {Variant.parse(shown).seed}: best avg selectivity",
        title=f"(C) r = {row.pearson_r:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]",
    )
    fig.suptitle(title)
    fig.tight_layout()
    legend_below(
        fig, axes[:1], title=seed_note(n_seeds, "(A) band: range over seeds; (B) small: one seed")
    )
    save_figure(fig, png_path, tight_bbox=True)
