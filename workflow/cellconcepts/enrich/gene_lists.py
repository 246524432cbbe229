"""Genes associated with each dictionary feature: the gene lists that GO enrichment tests.

scRNA (scFeatureLens, done properly): cells where the feature is strongly active vs cells where
it is zero, differential expression over all genes, BH across genes, fold-change threshold, up
and down lists. Microscopy: the screened genes for which the feature is most selective.

Every feature yields rows of a sparse (lists, genes) matrix plus a table saying what each list
is (feature, direction) and why a feature has no list (its ``status``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import false_discovery_control, rankdata
from tqdm.auto import tqdm

from cellconcepts.enrich import differential_expression as de
from cellconcepts.enrich.genesets import normalise_symbols
from cellconcepts.enrich.modes import EXPRESSION
from cellconcepts.evaluate.selectivity import Selectivity, selectivity

log = logging.getLogger(__name__)

# Status of a feature's gene lists (documented in config/README.md, enrich.expression and
# enrich.screen).
OK = "ok"
ALL_ACTIVE_CELLS = "all_active_cells"  # too few strongly active cells: every active cell used
TOO_FEW_ACTIVE = "too_few_active_cells"  # skipped: fewer than min_cells active cells
TOO_FEW_ZERO = "too_few_zero_cells"  # skipped: active on nearly every cell, no reference
NO_DE_GENES = "no_de_genes"  # tested, but no gene passed the FDR and fold-change thresholds
NO_SELECTIVE_GENES = "no_selective_genes"  # microscopy: no gene with positive selectivity

UP, DOWN, SELECTIVE = "up", "down", "selective"
DE_METHODS = ("welch", "t-test", "wilcoxon")


@dataclass(frozen=True)
class GeneLists:
    """Gene lists over a background: ``lists`` (L, G) 0/1 CSR over ``genes``; ``index`` has one
    row per list (``feature``, ``direction``); ``genes_table`` one row per listed gene with its
    statistics; ``features`` one row per feature with its ``status`` and group sizes."""

    genes: np.ndarray
    lists: sp.csr_matrix
    index: pd.DataFrame
    genes_table: pd.DataFrame
    features: pd.DataFrame


# --------------------------------------------------------------------------- scRNA


def activation_groups(
    codes: sp.spmatrix | np.ndarray, *, percentile: float, min_cells: int
) -> tuple[sp.csc_matrix, sp.csc_matrix, pd.DataFrame]:
    """Per feature: the strongly active cells and the active (non-zero) cells, as (cells, F) 0/1
    matrices, and a table of group sizes and statuses.

    Strongly active: activations of the feature's dominant sign (signed ICFL codes; TopK codes are
    non-negative) with magnitude at or above ``percentile`` of those magnitudes; cells active
    with the other sign are in neither group (counted in ``n_opposite_sign``). With fewer than
    ``min_cells`` such cells, every cell of the dominant sign is used (``all_active_cells``); with
    still too few, or fewer than ``min_cells`` zero cells, the feature is skipped.
    """
    if not 0 <= percentile < 100:
        raise ValueError(f"active_percentile: expected a value in [0, 100), got {percentile}")
    csc = sp.csc_matrix(codes, dtype=np.float64)
    csc.eliminate_zeros()
    n_cells, n_features = csc.shape
    strong_rows, strong_cols, rows_nz, cols_nz, records = [], [], [], [], []
    for f in range(n_features):
        start, stop = csc.indptr[f], csc.indptr[f + 1]
        cells, values = csc.indices[start:stop], csc.data[start:stop]
        sign = 1.0 if (values > 0).sum() >= (values < 0).sum() else -1.0
        magnitude = values * sign
        same_sign = magnitude > 0
        threshold = float(np.percentile(magnitude[same_sign], percentile)) if same_sign.any() else 0
        strong = same_sign & (magnitude >= threshold)
        status = OK
        if strong.sum() < min_cells:
            strong, status = same_sign, ALL_ACTIVE_CELLS
            threshold = float(magnitude[same_sign].min()) if same_sign.any() else 0
        if strong.sum() < min_cells:
            status = TOO_FEW_ACTIVE
        elif n_cells - cells.size < min_cells:
            status = TOO_FEW_ZERO
        strong_rows.append(cells[strong])
        strong_cols.append(np.full(int(strong.sum()), f))
        rows_nz.append(cells)
        cols_nz.append(np.full(cells.size, f))
        records.append(
            {
                "feature": f,
                "sign": int(sign),
                "n_active": int(cells.size),
                "n_opposite_sign": int((magnitude < 0).sum()),
                "n_strong": int(strong.sum()),
                "n_zero": int(n_cells - cells.size),
                "activation_threshold": threshold * sign,
                "status": status,
            }
        )

    def indicator(rows: list[np.ndarray], cols: list[np.ndarray]) -> sp.csc_matrix:
        r, c = np.concatenate(rows), np.concatenate(cols)
        return sp.csc_matrix((np.ones(r.size), (r, c)), shape=(n_cells, n_features))

    return indicator(strong_rows, strong_cols), indicator(rows_nz, cols_nz), pd.DataFrame(records)


def expression_gene_lists(
    expression: sp.spmatrix | np.ndarray,
    genes: Sequence[str],
    codes: sp.spmatrix | np.ndarray,
    *,
    percentile: float = 50.0,
    min_cells: int = 10,
    fdr: float = 0.05,
    min_log2_fold_change: float = 1.0,
    method: str = "welch",
    chunk_size: int = 256,
) -> GeneLists:
    """Up and down gene lists of every feature: strongly active vs zero cells, BH across genes.

    ``method``: ``welch`` (vectorised here over features x genes), or scanpy's
    ``rank_genes_groups`` with ``t-test`` (the same Welch test, one feature at a time) or
    ``wilcoxon``. A gene is listed when its BH-adjusted p-value is below ``fdr`` and its log2
    fold change is at least ``min_log2_fold_change`` (up) or at most minus that (down).
    """
    if method not in DE_METHODS:
        raise ValueError(f"de_method: expected one of {DE_METHODS}, got {method!r}")
    genes = np.asarray(genes, dtype=object)
    if expression.shape != (codes.shape[0], genes.size):
        raise ValueError(
            f"expression: expected shape ({codes.shape[0]} cells, {genes.size} genes) to match "
            f"the codes and gene names, got {expression.shape}"
        )
    strong, active, features = activation_groups(codes, percentile=percentile, min_cells=min_cells)
    testable = np.flatnonzero(features["status"].isin([OK, ALL_ACTIVE_CELLS]).to_numpy())
    total = de.group_sums(expression, np.ones((expression.shape[0], 1)))
    tables = []
    for start in tqdm(range(0, testable.size, chunk_size), desc="differential expression"):
        chunk = testable[start : start + chunk_size]
        if method == "welch":
            a = de.group_sums(expression, strong[:, chunk]).moments()
            b = de.group_sums(expression, active[:, chunk]).complement(total).moments()
            t, p = de.welch_t_test(a, b)
            lfc = de.log2_fold_change(a.mean, b.mean)
        else:
            t, p, lfc = _scanpy_de(expression, strong[:, chunk], active[:, chunk], method)
        tables.append(_listed_genes(chunk, genes, t, p, lfc, fdr, min_log2_fold_change))
    listed = pd.concat(tables, ignore_index=True) if tables else _empty_gene_table()
    n_listed = listed.groupby("feature").size().reindex(features["feature"], fill_value=0)
    no_genes = features["status"].isin([OK, ALL_ACTIVE_CELLS]) & (n_listed.to_numpy() == 0)
    features.loc[no_genes, "status"] = NO_DE_GENES
    for direction in (UP, DOWN):
        counts = listed[listed["direction"] == direction].groupby("feature").size()
        features[f"n_{direction}"] = counts.reindex(features["feature"], fill_value=0).to_numpy()
    log.info(
        "differential expression (%s) for %d of %d features; statuses: %s",
        method,
        testable.size,
        len(features),
        features["status"].value_counts().to_dict(),
    )
    return _as_gene_lists(genes, listed, features, directions=(UP, DOWN))


def _listed_genes(
    chunk: np.ndarray,
    genes: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    lfc: np.ndarray,
    fdr: float,
    min_lfc: float,
) -> pd.DataFrame:
    """Genes passing BH (across genes, per feature) and the fold-change threshold."""
    p = np.where(np.isnan(p), 1.0, p)
    q = false_discovery_control(p, axis=1)
    up = (q < fdr) & (lfc >= min_lfc)
    down = (q < fdr) & (lfc <= -min_lfc)
    rows, cols = np.nonzero(up | down)
    return pd.DataFrame(
        {
            "feature": chunk[rows],
            "direction": np.where(up[rows, cols], UP, DOWN),
            "gene": genes[cols],
            "log2_fold_change": lfc[rows, cols],
            "statistic": t[rows, cols],
            "p_value": p[rows, cols],
            "fdr": q[rows, cols],
        }
    )


def _scanpy_de(
    expression, strong: sp.csc_matrix, active: sp.csc_matrix, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strongly active vs zero cells with ``scanpy.tl.rank_genes_groups``, one feature at a time."""
    import anndata
    import scanpy as sc

    adata = anndata.AnnData(X=expression)
    n_genes = expression.shape[1]
    out = [np.empty((strong.shape[1], n_genes)) for _ in range(3)]
    for j in range(strong.shape[1]):
        group = np.full(expression.shape[0], "other", dtype=object)
        group[active[:, j].toarray().ravel() == 0] = "zero"
        group[strong[:, j].toarray().ravel() > 0] = "strong"
        adata.obs["group"] = pd.Categorical(group)
        sc.tl.rank_genes_groups(
            adata, "group", groups=["strong"], reference="zero", method=method, n_genes=n_genes
        )
        result = adata.uns["rank_genes_groups"]
        order = pd.Index(adata.var_names).get_indexer(result["names"]["strong"])
        for target, key in zip(out, ("scores", "pvals", "logfoldchanges"), strict=True):
            target[j, order] = np.asarray(result[key]["strong"], dtype=np.float64)
    return out[0], out[1], out[2]


# --------------------------------------------------------------------------- microscopy


def selective_gene_lists(
    codes: sp.spmatrix | np.ndarray,
    gene_labels: pd.Series,
    *,
    controls: Iterable[str],
    min_selectivity: float | None = 0.2,
    top_n: int = 5,
) -> GeneLists:
    """Per feature: the screened genes for which it is most selective (avg selectivity on the
    gene task). Genes with avg selectivity >= ``min_selectivity`` are listed; when fewer than
    ``top_n`` pass, the ``top_n`` genes with the highest positive selectivity are listed instead
    (``min_selectivity: null`` always takes the top n; ``top_n: 0`` never does); genes tied at
    the n-th place are all listed. The background is every screened gene: the gene labels other
    than the controls.
    """
    controls = {str(c) for c in controls}
    sel: Selectivity = selectivity(codes, gene_labels)
    screened = screened_genes(sel.labels, controls)
    if screened.size < 2:
        raise ValueError(
            f"gene labels: expected at least 2 screened genes besides the controls "
            f"{sorted(controls)}, got {list(screened)}"
        )
    rows = np.isin(sel.labels, screened)
    avg = sel.avg[rows]  # (G, F)
    rank = rankdata(-avg, method="min", axis=0).astype(np.int64)  # ties at the cut all count
    by_threshold = (
        (avg >= min_selectivity) & (avg > 0)
        if min_selectivity is not None
        else np.zeros_like(avg, bool)
    )
    n_threshold = by_threshold.sum(axis=0)
    use_top = n_threshold < top_n
    by_top = (rank <= top_n) & (avg > 0)
    chosen = np.where(use_top[None, :], by_top, by_threshold)
    g, f = np.nonzero(chosen)
    listed = pd.DataFrame(
        {
            "feature": f,
            "direction": SELECTIVE,
            "gene": screened[g],
            "avg_selectivity": avg[g, f],
            "selectivity_rank": rank[g, f],
        }
    ).sort_values(["feature", "selectivity_rank"], ignore_index=True)
    n_listed = chosen.sum(axis=0)
    features = pd.DataFrame(
        {
            "feature": np.arange(avg.shape[1]),
            "best_gene_selectivity": avg.max(axis=0),
            "n_selective": n_listed,
            "selection": np.where(use_top, "top_n", "threshold"),
            "status": np.where(n_listed > 0, OK, NO_SELECTIVE_GENES),
        }
    )
    log.info(
        "selective genes: %d screened genes, %d features listed by threshold, %d by top %d, "
        "%d with none",
        screened.size,
        int((~use_top & (n_listed > 0)).sum()),
        int((use_top & (n_listed > 0)).sum()),
        top_n,
        int((n_listed == 0).sum()),
    )
    return _as_gene_lists(screened, listed, features, directions=(SELECTIVE,))


def screened_genes(labels: Iterable[str], controls: Iterable[str]) -> np.ndarray:
    """The background of a screen's gene lists: every gene label other than the controls, in
    the order of ``labels``."""
    controls = {str(c) for c in controls}
    return np.array([g for g in labels if g not in controls], dtype=object)


# --------------------------------------------------------------------------- shared


def _as_gene_lists(
    genes: np.ndarray, listed: pd.DataFrame, features: pd.DataFrame, directions: Sequence[str]
) -> GeneLists:
    """One list per (feature, direction) with at least one gene, as CSR rows over ``genes``."""
    index = listed[["feature", "direction"]].drop_duplicates()
    index["direction"] = pd.Categorical(index["direction"], categories=list(directions))
    index = index.sort_values(["feature", "direction"], ignore_index=True)
    index["direction"] = index["direction"].astype(str)
    list_id = pd.MultiIndex.from_frame(index).get_indexer(
        pd.MultiIndex.from_frame(listed[["feature", "direction"]])
    )
    gene_id = pd.Index(genes).get_indexer(listed["gene"])
    lists = sp.csr_matrix(
        (np.ones(len(listed)), (list_id, gene_id)), shape=(len(index), genes.size)
    )
    return GeneLists(genes=genes, lists=lists, index=index, genes_table=listed, features=features)


def _empty_gene_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": pd.Series(dtype=np.int64),
            "direction": pd.Series(dtype=object),
            "gene": pd.Series(dtype=object),
            "log2_fold_change": pd.Series(dtype=np.float64),
            "statistic": pd.Series(dtype=np.float64),
            "p_value": pd.Series(dtype=np.float64),
            "fdr": pd.Series(dtype=np.float64),
        }
    )


# --------------------------------------------------------------------------- per dataset


def screen_controls(
    control: str | Mapping[str, Any] | None, obs: pd.DataFrame, gene_column: str
) -> list[str]:
    """Values of the gene column that are not screened genes: the configured controls (the
    dataset's ``control``, when defined on that column) and any value found only on control
    rows (``is_control``)."""
    controls: set[str] = set()
    if isinstance(control, Mapping) and control.get("column") == gene_column:
        controls |= {str(v) for v in control.get("values", [])}
    genes = obs[gene_column].astype("string")
    only_controls = obs["is_control"].astype(bool).groupby(genes, observed=True).all()
    controls |= set(only_controls.index[only_controls.to_numpy()].astype(str))
    return sorted(controls)


def screen_gene_labels(obs: pd.DataFrame, gene_column: str) -> pd.Series:
    """The perturbed gene of each token as a normalised symbol (missing stays NaN): the gene
    labels a screen's features are selective for."""
    if gene_column not in obs.columns:
        raise ValueError(
            f"token store obs.parquet: no column {gene_column!r} (enrich.screen.gene_column, the "
            f"perturbed gene of each image); columns: {list(obs.columns)}"
        )
    labels = obs[gene_column].astype("string").astype(object)
    labels = labels.where(labels.notna(), np.nan)
    return labels.where(labels.isna(), normalise_symbols(labels.fillna("")))


def screen_background(
    obs: pd.DataFrame, gene_column: str, control: str | Mapping[str, Any] | None
) -> np.ndarray:
    """Every screened gene of a token store, sorted: the background the screen's gene lists
    are tested in (`selective_gene_lists` lists genes over the same one)."""
    labels = screen_gene_labels(obs, gene_column)
    controls = normalise_symbols(screen_controls(control, obs, gene_column))
    return screened_genes(np.unique(labels.dropna().astype(str).to_numpy()), controls)


def feature_gene_lists(
    mode: str,
    codes: sp.csr_matrix,
    obs: pd.DataFrame,
    settings: Mapping[str, Any],
    *,
    control: str | Mapping[str, Any] | None,
    expression_source: str | None,
) -> GeneLists:
    """Gene lists of every feature, by differential expression or by selectivity."""
    if mode == EXPRESSION:
        from cellconcepts.sources.expression import aligned_expression

        section = settings["expression"]
        values, genes = aligned_expression(expression_source, section["matrix"], obs)
        return expression_gene_lists(
            values,
            genes,
            codes,
            percentile=section["active_percentile"],
            min_cells=section["min_cells"],
            fdr=section["de_fdr"],
            min_log2_fold_change=section["min_log2_fold_change"],
            method=section["de_method"],
        )
    section = settings["screen"]
    column = section["gene_column"]
    return selective_gene_lists(
        codes,
        screen_gene_labels(obs, column),
        controls=normalise_symbols(screen_controls(control, obs, column)),
        min_selectivity=section["min_selectivity"],
        top_n=section["top_n"],
    )
