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

from cellconcepts.files import PathLike, atomic_path  # noqa: E402
from cellconcepts.variant import Variant  # noqa: E402

log = logging.getLogger(__name__)

METHOD_LABELS = {"icfl": "ICFL", "topk": "TopK", "raw": "raw tokens"}
FIGURE_DPI = 150
# The per-dataset figures of rule report_dataset, by file stem under results/<dataset>/figures/.
DATASET_FIGURES = ("training_curves", "best_selectivity", "probing_bta", "sparsity")
# `snakemake --report` files a dataset's results under stages (subcategories); it lists them
# sorted by name, so the numbers give the reading order, Headline first. A stage with one digit
# keeps that order ("10." would sort before "2.").
REPORT_STAGES = (
    "1. Headline",
    "2. Training",
    "3. Probing",
    "4. Selectivity",
    "5. Embedding",
    "6. Token heatmaps",
    "7. Single-cell check",
    "8. CellProfiler baseline",
    "9. GO enrichment",
)
# The stage of each figure and table of rule report_dataset, by file stem.
REPORT_STAGE = {
    "training_curves": "2. Training",
    "dead_features": "2. Training",
    "reconstruction": "2. Training",
    "probing_bta": "3. Probing",
    "sparsity": "3. Probing",
    "probing": "3. Probing",
    "headline_seeds": "1. Headline",
    "best_selectivity": "4. Selectivity",
    "selectivity_counts": "4. Selectivity",
    "label_scores": "4. Selectivity",
    "references": "4. Selectivity",
}


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


def seed_band(ax, x, low, high, color) -> None:
    """The range over model seeds, shaded behind a model's mean curve."""
    ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)


def variant_style(method: str, whitening: str) -> dict[str, object]:
    colour = {"icfl": "tab:blue", "topk": "tab:orange", "raw": "black"}[method]
    return {"color": colour, "linestyle": "-" if whitening == "pca" else "--"}


def model_key(variant: str) -> tuple[str, str, int]:
    """(method, whitening, sparsity) of a variant name: the model a figure draws once, its
    seeds aggregated."""
    spec = Variant.parse(variant)
    return spec.method, spec.whitening, spec.sparsity


def model_order(key: tuple[str, str, int]) -> tuple[str, bool, int]:
    """Legend order: by method, PCA before no whitening, then by sparsity."""
    method, whitening, sparsity = key
    return method, whitening != "pca", sparsity


def model_label(method: str, whitening: str, sparsity: float) -> str:
    """'ICFL + PCA, k=8': one legend entry per model, whatever its number of seeds."""
    return f"{variant_label(method, whitening)}, k={float(sparsity):g}"


def seed_note(n_seeds: int, spread: str) -> str | None:
    """The legend's title where models have several seeds (what the line or bar shows)."""
    return f"mean of {n_seeds} seeds; {spread}" if n_seeds > 1 else None


def model_style(
    method: str, whitening: str, sparsity: float, sparsities: Sequence[float]
) -> dict[str, object]:
    """`variant_style` with the colour shaded by sparsity where a figure has several (pale for
    the sparsest, full for the densest), so that every model's legend entry is its own."""
    from matplotlib.colors import to_rgb

    style = variant_style(method, whitening)
    levels = sorted(set(sparsities))
    if len(levels) > 1:
        weight = 0.4 + 0.6 * levels.index(sparsity) / (len(levels) - 1)
        colour = np.array(to_rgb(style["color"]))
        style["color"] = tuple(weight * colour + (1 - weight) * np.ones(3))
    return style


def legend_below(fig: plt.Figure, axes: Sequence[plt.Axes], *, title: str | None = None) -> None:
    """One legend for the figure, below the panels (clear of the data): every labelled artist
    of ``axes`` once, in drawing order. Save with ``tight_bbox=True`` so that it is kept."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    # Markers for single seeds after the models they belong to.
    entries = {k: v for k, v in entries.items() if k != "one seed"} | {
        k: v for k, v in entries.items() if k == "one seed"
    }
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(4, max(len(entries), 1)),
        fontsize=8,
        title=title,
        title_fontsize=8,
        handlelength=3,
        frameon=False,
    )


def plot_training_curves(metrics: pd.DataFrame, png_path: PathLike, *, title: str) -> None:
    """Loss, reconstruction cosine and dead fraction against training step: per model (method,
    whitening, sparsity) the mean over its seeds, with the seeds' range as a band."""
    panels = [
        ("loss", "loss"),
        ("recon_cosine", "batch reconstruction cosine"),
        ("frac_dead", "fraction dead"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    keyed = metrics.assign(_model=[model_key(v) for v in metrics["variant"]])
    n_seeds = 1
    sparsities = [k[2] for k in keyed["_model"]]
    for key in sorted(set(keyed["_model"]), key=model_order):
        table = keyed[keyed["_model"] == key]
        n_seeds = max(n_seeds, table["variant"].nunique())
        method, whitening, sparsity = key
        style = model_style(method, whitening, sparsity, sparsities)
        for ax, (column, _) in zip(axes, panels, strict=True):
            steps = table.groupby("step")[column].agg(["mean", "min", "max"])
            ax.plot(
                steps.index,
                steps["mean"],
                label=model_label(method, whitening, sparsity),
                linewidth=1.2,
                **style,
            )
            if table["variant"].nunique() > 1:
                seed_band(ax, steps.index, steps["min"], steps["max"], style["color"])
    for ax, (column, name) in zip(axes, panels, strict=True):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if column == "loss":
            ax.set_yscale("log")
        if column == "frac_dead":
            ax.set_ylim(-0.02, max(0.1, ax.get_ylim()[1]))
    fig.suptitle(title)
    fig.tight_layout()
    legend_below(fig, axes[:1], title=seed_note(n_seeds, "band: range over seeds"))
    save_figure(fig, png_path, tight_bbox=True)


def sorted_curves(table: pd.DataFrame, column: str) -> np.ndarray:
    """Per variant (a row each) the column's values sorted in descending order, padded with
    NaN to the longest: rank r is column r - 1."""
    curves = [
        np.sort(part[column].dropna().to_numpy(dtype=np.float64))[::-1]
        for _, part in table.groupby("variant", sort=True)
    ]
    length = max((len(c) for c in curves), default=0)
    out = np.full((len(curves), length), np.nan)
    for row, curve in zip(out, curves, strict=True):
        row[: len(curve)] = curve
    return out


def plot_best_selectivity(best: pd.DataFrame, png_path: PathLike, *, title: str) -> None:
    """Paper Fig. 8: the best avg selectivity per label, sorted, one line per model (method,
    whitening, sparsity): at each label rank the mean over the model's seeds of their rank-r
    best label, the seeds' range as a band. Ranks are integers (label 1, 2, ...)."""
    from matplotlib.ticker import MaxNLocator

    tasks = list(dict.fromkeys(best["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    keyed = best.assign(_model=[model_key(v) for v in best["variant"]])
    n_seeds = 1
    sparsities = [k[2] for k in keyed["_model"]]
    for ax, task in zip(axes[0], tasks, strict=True):
        part = keyed[keyed.task == task]
        for key in sorted(set(part["_model"]), key=model_order):
            curves = sorted_curves(part[part["_model"] == key], "best_avg")
            n_seeds = max(n_seeds, len(curves))
            method, whitening, sparsity = key
            style = model_style(method, whitening, sparsity, sparsities)
            ranks = np.arange(1, curves.shape[1] + 1)
            ax.plot(
                ranks,
                np.nanmean(curves, axis=0),
                marker="." if len(ranks) < 30 else None,
                label=model_label(method, whitening, sparsity),
                **style,
            )
            if len(curves) > 1:
                seed_band(
                    ax, ranks, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), style["color"]
                )
        ax.set_title(task)
        ax.set_xlabel("label rank")
        ax.set_ylabel("best avg selectivity")
        ax.set_ylim(-0.05, 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    legend_below(fig, axes[0][:1], title=seed_note(n_seeds, "band: range over seeds"))
    save_figure(fig, png_path, tight_bbox=True)


SPARSITY_HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo")


def plot_probing(
    probes: pd.DataFrame, tasks: Sequence[str], png_path: PathLike, *, title: str
) -> None:
    """Paper Fig. 4A: BTA of probes on reconstructions per task, one bar per model (method,
    whitening, sparsity) and one for the raw tokens.

    ``probes`` is table ``probing`` (rows with ``representation`` 'reconstruction' per model
    seed, 'raw' for the tokens; ``bta``, ``bta_low``, ``bta_high``). A bar is the mean BTA over
    the model's seeds and its error bar the table's interval (``bta_low`` to ``bta_high``,
    averaged over seeds); each seed is a dot on its bar. Colour tells the method, shade the
    whitening, hatching the sparsity; the legend sits below the axes."""
    raw = probes[probes.method == "raw"]
    models = probes[(probes.method != "raw") & (probes.representation == "reconstruction")]
    models = models.assign(_model=[model_key(v) for v in models["variant"]])
    keys = sorted(set(models["_model"]), key=model_order)
    sparsities = sorted({k[2] for k in keys})
    hatch = {
        k: SPARSITY_HATCHES[i % len(SPARSITY_HATCHES)] if len(sparsities) > 1 else ""
        for i, k in enumerate(sparsities)
    }
    n_bars = len(keys) + 1
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + len(tasks) * (0.28 * n_bars + 0.5)), 3.8))
    width = 0.85 / n_bars
    x = np.arange(len(tasks))
    bars = [("raw", raw, {"color": "0.55", "alpha": 1.0, "hatch": ""}, "raw tokens")]
    for key in keys:
        method, whitening, sparsity = key
        style = {
            "color": variant_style(method, whitening)["color"],
            "alpha": 1.0 if whitening == "pca" else 0.45,
            "hatch": hatch[sparsity],
        }
        bars.append((key, models[models["_model"] == key], style, model_label(*key)))
    n_seeds = 1
    for i, (_, table, style, label) in enumerate(bars):
        per_task = table.groupby("task")[["bta", "bta_low", "bta_high"]].mean().reindex(tasks)
        n_seeds = max(n_seeds, table["variant"].nunique())
        centre = per_task["bta"].to_numpy(dtype=np.float64)
        errors = np.clip(
            [
                centre - per_task["bta_low"].to_numpy(dtype=np.float64),
                per_task["bta_high"].to_numpy(dtype=np.float64) - centre,
            ],
            0,
            None,
        )
        offset = x + (i - (n_bars - 1) / 2) * width
        ax.bar(
            offset,
            centre,
            width,
            yerr=errors,
            error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "black"},
            edgecolor="white",
            linewidth=0.3,
            label=label,
            **style,
        )
        if table["variant"].nunique() > 1:
            where = dict(zip(tasks, offset, strict=True))
            seeds = table[table.task.isin(tasks)]
            ax.plot(
                seeds["task"].map(where),
                seeds["bta"],
                linestyle="none",
                marker=".",
                markersize=2.5,
                color="black",
                label="one seed",
            )
    ax.set_xticks(x, tasks)
    ax.set_ylabel("balanced test accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    interval = "error bars: the table's interval (bta_low to bta_high)"
    legend_below(fig, [ax], title=seed_note(n_seeds, interval + ", averaged") or interval)
    save_figure(fig, png_path, tight_bbox=True)


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


def plot_dataset_figures(
    png_paths: Mapping[str, PathLike],
    *,
    metrics: pd.DataFrame,
    best: pd.DataFrame,
    probes: pd.DataFrame,
    headline: pd.DataFrame,
    raw_probing: pd.DataFrame,
    tasks: Sequence[str],
    title: str,
) -> None:
    """`DATASET_FIGURES` (``png_paths``, by file stem): the training curves of the models'
    ``metrics``, their ``best`` selectivity, the ``probes`` (table ``probing``) and the
    sparsity figure of the ``headline`` with intervals from the test tokens of the raw
    tokens' probe (``raw_probing``)."""
    plot_training_curves(metrics, png_paths["training_curves"], title=title)
    plot_best_selectivity(best, png_paths["best_selectivity"], title=title)
    plot_probing(probes, tasks, png_paths["probing_bta"], title=title)
    n_test = dict(zip(raw_probing.task, raw_probing.n_test, strict=True))
    plot_sparsity(headline, tasks, png_paths["sparsity"], title=title, n_test=n_test)
