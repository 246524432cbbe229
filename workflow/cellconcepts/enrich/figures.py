"""Figures of the GO enrichment stage: a dot plot of the top terms of the top features, and a
UMAP of the cells (scanpy, on the tokens the dictionary saw) coloured by feature activations."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from cellconcepts.files import PathLike  # noqa: E402
from cellconcepts.report.figures import save_figure  # noqa: E402

if TYPE_CHECKING:
    from cellconcepts.evaluate.selectivity import Selectivity

log = logging.getLogger(__name__)


def umap_coordinates(tokens: np.ndarray, *, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """2-D UMAP of the tokens with scanpy (kNN graph on the tokens themselves, no PCA)."""
    import anndata
    import scanpy as sc

    adata = anndata.AnnData(X=np.zeros((tokens.shape[0], 0), dtype=np.float32))
    adata.obsm["X_tokens"] = np.asarray(tokens, dtype=np.float32)
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep="X_tokens", random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    return np.asarray(adata.obsm["X_umap"])


def _short(term: str, width: int = 75) -> str:
    return textwrap.shorten(term, width=width, placeholder="...")


def plot_dotplot(
    enrichment: pd.DataFrame,
    features: Sequence[int],
    png_path: PathLike,
    *,
    n_terms: int = 3,
    fdr: float = 0.05,
    title: str,
) -> None:
    """Top ``n_terms`` terms of each feature (columns) as dots: size = overlapping genes,
    colour = -log10 FDR; dots above the FDR threshold are hollow."""
    rows = []
    for feature in features:
        top = enrichment[enrichment["feature"] == feature].nsmallest(n_terms, ["p_value"])
        rows.append(top)
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    fig_height = 2.0 + 0.28 * max(1, table["term"].nunique() if len(table) else 1)
    fig, ax = plt.subplots(figsize=(2.5 + 0.55 * max(1, len(features)), fig_height))
    if table.empty:
        ax.text(0.5, 0.5, "no feature has an enriched term", ha="center", va="center")
        ax.set_axis_off()
    else:
        labels = [
            f"{f}{'' if d == 'selective' else ' ' + d}"
            for f, d in table[["feature", "direction"]].drop_duplicates().itertuples(index=False)
        ]
        columns = {
            key: i
            for i, key in enumerate(
                table[["feature", "direction"]].drop_duplicates().itertuples(index=False, name=None)
            )
        }
        terms = list(dict.fromkeys(table["term"]))
        x = [columns[(f, d)] for f, d in zip(table["feature"], table["direction"], strict=True)]
        y = [terms.index(t) for t in table["term"]]
        score = -np.log10(np.clip(table["fdr"].to_numpy(), 1e-300, 1))
        significant = table["fdr"].to_numpy() < fdr
        sizes = 25 + 25 * table["overlap"].to_numpy()
        points = ax.scatter(
            np.asarray(x)[significant],
            np.asarray(y)[significant],
            s=sizes[significant],
            c=score[significant],
            cmap="viridis",
            vmin=0,
            vmax=max(score.max(), 2),
            edgecolors="black",
            linewidths=0.5,
        )
        ax.scatter(
            np.asarray(x)[~significant],
            np.asarray(y)[~significant],
            s=sizes[~significant],
            facecolors="none",
            edgecolors="grey",
            linewidths=0.8,
        )
        fig.colorbar(points, ax=ax, label="-log10 FDR", shrink=0.6)
        ax.set_xticks(range(len(labels)), labels, rotation=90)
        ax.set_yticks(range(len(terms)), [_short(t) for t in terms], fontsize=7)
        ax.set_xlabel("feature")
        ax.invert_yaxis()
        for n in (1, 5, 10):
            ax.scatter(
                [],
                [],
                s=25 + 25 * n,
                facecolors="none",
                edgecolors="black",
                label=f"{n} gene{'s' if n > 1 else ''}",
            )
        if (~significant).any():
            ax.scatter([], [], s=75, facecolors="none", edgecolors="grey", label=f"FDR >= {fdr:g}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.25, 1), fontsize=7, frameon=False)
    ax.set_title(title, fontsize=9)
    save_figure(fig, png_path, tight_bbox=True)


def umap_panels(
    sel: Selectivity,
    annotation: pd.DataFrame,
    labels: Sequence[str] | None,
    n_features: int,
    task: str,
) -> list[tuple[int, str]]:
    """(feature, caption) of the feature most selective for each of ``labels`` (all labels of
    ``sel`` when None; the first ``n_features``), captioned with its best term from
    ``annotation`` (the `annotate_features` table indexed by feature) or why it has none."""
    wanted = labels or list(sel.labels)
    missing = sorted(set(wanted) - set(sel.labels))
    if missing:
        raise ValueError(f"enrich.labels: {missing} are not labels of task {task!r}")
    panels = []
    for label in wanted[:n_features]:
        i = list(sel.labels).index(label)
        f = int(np.argmax(sel.avg[i]))
        best = annotation.loc[f]
        if pd.isna(best["best_term"]):
            term = f"no gene list ({best['status']})"
        else:
            term = f"{best['best_term']} ({best['best_direction']}, FDR {best['best_fdr']:.2g})"
        caption = f"feature {f} (most selective for {label}, avg {sel.avg[i, f]:.2f}): {term}"
        panels.append((f, caption))
    return panels


def plot_umap(
    coordinates: np.ndarray,
    codes: sp.csr_matrix,
    features: Sequence[tuple[int, str]],
    labels: pd.Series,
    png_path: PathLike,
    *,
    title: str,
) -> None:
    """One panel of the cells' labels, then one per feature coloured by its activation."""
    n_panels = 1 + len(features)
    n_cols = min(4, n_panels)
    n_rows = int(np.ceil(n_panels / n_cols))
    categories = pd.Categorical(labels.astype(str))
    # Room below the first row for the labels' legend (two columns).
    legend_height = 0.13 * np.ceil(len(categories.categories) / 2)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.3 * n_cols, 3.0 * n_rows + legend_height), squeeze=False
    )
    flat = axes.ravel()
    cmap = plt.get_cmap("tab20", max(len(categories.categories), 1))
    for i, name in enumerate(categories.categories):
        mask = categories == name
        flat[0].scatter(*coordinates[mask].T, s=3, color=cmap(i), label=name)
    # Below the panel, clear of the cells.
    flat[0].legend(
        fontsize=6,
        markerscale=2,
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=2,
        handletextpad=0.2,
        columnspacing=0.8,
    )
    flat[0].set_title(labels.name or "labels", fontsize=8)
    dense = codes.tocsc()
    for ax, (feature, caption) in zip(flat[1:], features, strict=False):
        values = dense[:, feature].toarray().ravel()
        order = np.argsort(np.abs(values))
        limit = max(np.abs(values).max(), 1e-12)
        points = ax.scatter(
            *coordinates[order].T, c=values[order], s=3, cmap="RdBu_r", vmin=-limit, vmax=limit
        )
        fig.colorbar(points, ax=ax, shrink=0.7)
        ax.set_title(textwrap.fill(caption, 40), fontsize=7)
    for ax in flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in flat[n_panels:]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    save_figure(fig, png_path, tight_bbox=True)
