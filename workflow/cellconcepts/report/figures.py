"""Figures: the one way they are saved (PNG and PDF), the paper's legend names and styles, and
the per-dataset figures (training curves, best selectivity, probing, sparsity)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cellconcepts.config import Variant  # noqa: E402
from cellconcepts.files import PathLike, atomic_path  # noqa: E402

log = logging.getLogger(__name__)

METHOD_LABELS = {"icfl": "ICFL", "topk": "TopK", "raw": "raw tokens"}
FIGURE_DPI = 150
# The per-dataset figures of rule report_dataset, by file stem under results/<dataset>/figures/.
DATASET_FIGURES = ("training_curves", "best_selectivity", "probing_bta", "sparsity")


def save_figure(fig: plt.Figure, png_path: PathLike, *, tight_bbox: bool = False) -> None:
    """Write the figure as PNG (150 dpi) and as a PDF beside it (same stem), each atomically,
    and close it. A figure without a layout engine is laid out tightly first; ``tight_bbox``
    keeps legends placed outside the axes."""
    png_path = Path(png_path)
    extra = {"bbox_inches": "tight"} if tight_bbox else {}
    try:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        for path, fmt in ((png_path, "png"), (png_path.with_suffix(".pdf"), "pdf")):
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=FIGURE_DPI, **extra)
    finally:
        plt.close(fig)


def variant_label(method: str, whitening: str) -> str:
    """'ICFL + PCA' / 'TopK (no whitening)', the paper's legend names."""
    suffix = " + PCA" if whitening == "pca" else " (no whitening)"
    return METHOD_LABELS[method] + suffix


def variant_style(method: str, whitening: str) -> dict[str, object]:
    colour = {"icfl": "tab:blue", "topk": "tab:orange", "raw": "black"}[method]
    return {"color": colour, "linestyle": "-" if whitening == "pca" else "--"}


def plot_training_curves(metrics: pd.DataFrame, png_path: PathLike, *, title: str) -> None:
    """Loss, reconstruction cosine and dead fraction against training step, per variant."""
    panels = [
        ("loss", "loss"),
        ("recon_cosine", "batch reconstruction cosine"),
        ("frac_dead", "fraction dead"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for variant, table in metrics.groupby("variant", sort=True):
        spec = Variant.parse(variant)
        label = f"{variant_label(spec.method, spec.whitening)}, k={spec.sparsity}"
        for ax, (column, _) in zip(axes, panels, strict=True):
            ax.plot(
                table["step"],
                table[column],
                label=label,
                **variant_style(spec.method, spec.whitening),
            )
    for ax, (column, name) in zip(axes, panels, strict=True):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if column == "loss":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, png_path)


def plot_best_selectivity(best: pd.DataFrame, png_path: PathLike, *, title: str) -> None:
    """Paper Fig. 8: the best avg selectivity per label, sorted, one line per variant."""
    tasks = list(dict.fromkeys(best["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for variant, table in best[best.task == task].groupby("variant", sort=True):
            spec = Variant.parse(variant)
            scores = np.sort(table["best_avg"].to_numpy())[::-1]
            ax.plot(
                np.arange(1, len(scores) + 1),
                scores,
                marker="." if len(scores) < 30 else None,
                label=f"{variant_label(spec.method, spec.whitening)}, k={spec.sparsity}",
                **variant_style(spec.method, spec.whitening),
            )
        ax.set_title(task)
        ax.set_xlabel("label rank")
        ax.set_ylabel("best avg selectivity")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, png_path)


def plot_probing(
    headline: pd.DataFrame, tasks: Sequence[str], png_path: PathLike, *, title: str
) -> None:
    """Paper Fig. 4A: BTA of probes on reconstructions per task, raw tokens as reference."""
    models = headline[headline.method != "raw"]
    raw = headline[headline.method == "raw"].iloc[0]
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(tasks), 3.6))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(tasks))
    for i, (_, row) in enumerate(models.iterrows()):
        style = variant_style(row.method, row.whitening)
        ax.bar(
            x + (i - (len(models) - 1) / 2) * width,
            [row[f"bta_{t}"] for t in tasks],
            width,
            color=style["color"],
            alpha=1.0 if row.whitening == "pca" else 0.5,
            label=f"{variant_label(row.method, row.whitening)}, k={row.sparsity}",
        )
    for xi, task in zip(x, tasks, strict=True):
        ax.hlines(raw[f"bta_{task}"], xi - 0.45, xi + 0.45, colors="black", label=None)
    ax.plot([], [], color="black", label="raw tokens")
    ax.set_xticks(x, tasks)
    ax.set_ylabel("balanced test accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title)
    save_figure(fig, png_path)


def bta_interval(bta: np.ndarray | pd.Series, n_test: int) -> np.ndarray:
    """Half-width of an approximate 95 % interval of a balanced test accuracy on ``n_test``
    tokens: 1.96 binomial standard errors, sqrt(b (1 - b) / n) (the balanced accuracy's own
    error depends on the per-class recalls and sizes, which the probe tables do not keep)."""
    b = np.clip(np.asarray(bta, dtype=np.float64), 0.0, 1.0)
    return 1.96 * np.sqrt(b * (1 - b) / max(int(n_test), 1))


def plot_sparsity(
    headline: pd.DataFrame,
    tasks: Sequence[str],
    png_path: PathLike,
    *,
    title: str,
    n_test: Mapping[str, int] | None = None,
) -> None:
    """Paper Fig. 4B/C: probe BTA and held-out reconstruction cosine against sparsity.

    Axes run from 0 to 1, so that differences of a few points (often within the noise of a
    small test set) are drawn at their size, and the BTA carries an approximate 95 % interval
    (`bta_interval`, from the task's ``n_test`` test tokens); whitening is told by line and
    marker, the legend sits below the panels."""
    models = headline[headline.method != "raw"]
    raw = headline[headline.method == "raw"].iloc[0]
    columns = [*[f"bta_{t}" for t in tasks], "recon_cosine"]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.2), squeeze=False)
    sparsities = sorted(models["sparsity"].unique())
    for ax, column in zip(axes[0], columns, strict=True):
        for (method, whitening), table in models.groupby(["method", "whitening"]):
            table = table.groupby("sparsity", as_index=False)[column].mean()
            task = column.removeprefix("bta_")
            errors = (
                bta_interval(table[column], n_test[task])
                if n_test is not None and task in n_test
                else None
            )
            ax.errorbar(
                table["sparsity"],
                table[column],
                yerr=errors,
                capsize=3,
                marker="o" if whitening == "pca" else "s",
                markerfacecolor="white" if whitening != "pca" else None,
                label=variant_label(method, whitening),
                **variant_style(method, whitening),
            )
        if column != "recon_cosine":
            ax.axhline(raw[column], color="black", linestyle=":", label="raw tokens")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sparsities, [f"{k:g}" for k in sparsities])
        ax.minorticks_off()
        ax.set_ylim(0, 1)
        ax.set_xlabel("sparsity k (non-zeros per token)")
        ax.set_ylabel(
            column.replace("bta_", "balanced test accuracy, ").replace(
                "recon_cosine", "held-out reconstruction cosine"
            )
        )
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=len(labels),
        handlelength=3.5,
        frameon=False,
    )
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, png_path, tight_bbox=True)


def plot_feature_cosines(
    histograms: pd.DataFrame, summary: pd.DataFrame, png_path: PathLike, *, title: str
) -> None:
    """Paper Fig. 3: per label, the distribution of cosines between its best feature's
    direction and the label's own tokens (blue) or every other label's tokens (orange), each
    normalised to a density so that groups of different sizes compare."""
    labels = list(summary["label"])
    columns = min(3, max(len(labels), 1))
    rows = max(1, -(-len(labels) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.4 * columns, 2.6 * rows), squeeze=False, sharex=True
    )
    for ax, row in zip(axes.flat, summary.itertuples(index=False), strict=False):
        for group, colour in (("other", "tab:orange"), ("own", "tab:blue")):
            part = histograms[(histograms.label == row.label) & (histograms.group == group)]
            width = (part.bin_right - part.bin_left).to_numpy()
            total = part["count"].sum()
            density = part["count"].to_numpy() / (total * width) if total else 0 * width
            ax.stairs(
                density,
                np.append(part.bin_left.to_numpy(), part.bin_right.to_numpy()[-1:]),
                fill=True,
                alpha=0.45,
                color=colour,
                label="own label" if group == "own" else "other labels",
            )
        ax.set_title(
            f"{row.label}: feature {row.feature}, AUC {row.auc_own_vs_other:.2f}\n"
            f"n = {row.n_own} own / {row.n_other} other tokens",
            fontsize=8,
        )
        ax.set_xlabel("cosine(token, feature direction)")
        ax.set_ylabel("density")
    for ax in list(axes.flat)[len(labels) :]:
        ax.set_visible(False)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, png_path, tight_bbox=True)
