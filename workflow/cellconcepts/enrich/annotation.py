"""One row per feature: the labels it is selective for, its gene lists and its best GO term;
and the one-row summary of a model's enrichment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.enrich.gene_lists import GeneLists
from cellconcepts.enrich.genesets import TermMatrix
from cellconcepts.evaluate.labels import task_labels
from cellconcepts.evaluate.selectivity import selectivity


def selective_labels(
    codes: sp.csr_matrix,
    obs: pd.DataFrame,
    tasks: Sequence[Mapping[str, Any]],
    threshold: float,
    min_label_size: int = 1,
) -> pd.Series:
    """Per feature: 'task=label (avg)' for every label it is selective for (avg >= threshold);
    labels of fewer than ``min_label_size`` tokens are left out."""
    parts: list[list[str]] = [[] for _ in range(codes.shape[1])]
    for task in tasks:
        sel = selectivity(codes, task_labels(obs, task, min_label_size))
        label_idx, feature_idx = np.nonzero(sel.avg >= threshold)
        for i, f in sorted(zip(label_idx, feature_idx, strict=True), key=lambda p: p[1]):
            parts[f].append(f"{task['name']}={sel.labels[i]} ({sel.avg[i, f]:.2f})")
    return pd.Series(["; ".join(p) for p in parts], name="selective_labels")


def annotate_features(
    gene_lists: GeneLists,
    enrichment: pd.DataFrame,
    labels: pd.Series,
    fdr: float,
) -> pd.DataFrame:
    """One row per feature: status, list sizes, selective labels, best term and its genes."""
    table = gene_lists.features.copy()
    table.insert(1, "selective_labels", labels.to_numpy())
    # FDR first: it is only monotone in p within one list, and a feature has up to two lists
    best = enrichment.sort_values(
        ["feature", "fdr", "p_value", "term_size", "term"]
    ).drop_duplicates("feature")
    best = best.set_index("feature")[["direction", "term", "fdr", "overlap", "list_size", "genes"]]
    best.columns = [
        "best_direction",
        "best_term",
        "best_fdr",
        "best_overlap",
        "list_size",
        "best_genes",
    ]
    n_significant = enrichment[enrichment["fdr"] < fdr].groupby("feature").size()
    table = table.join(best, on="feature")
    table["n_significant_terms"] = n_significant.reindex(table["feature"], fill_value=0).to_numpy()
    return table


def most_enriched_features(features: pd.DataFrame, fdr: float, n: int) -> list[int]:
    """The ``n`` features whose best term has the smallest FDR, among those below ``fdr``
    (``features``: the `annotate_features` table); ties keep the table's order."""
    return list(features[features["best_fdr"] < fdr].nsmallest(n, "best_fdr")["feature"])


def model_summary(
    variant: str,
    mode: str,
    n_features: int,
    gene_lists: GeneLists,
    terms: TermMatrix,
    features: pd.DataFrame,
    seconds: tuple[float, float],
) -> pd.DataFrame:
    """One row: the model's gene lists, the background and the terms tested in it, how many
    features have a significant term (``features``: the `annotate_features` table), and how
    long the gene lists and the enrichment took (``seconds``)."""
    row = {
        "variant": variant,
        "mode": mode,
        "n_features": n_features,
        "n_gene_lists": gene_lists.lists.shape[0],
        "background_genes": terms.genes.size,
        "background_genes_in_no_term": terms.n_unmatched,
        "library_terms": terms.n_library_terms,
        "terms_tested": terms.n_terms,
        "features_with_significant_term": int((features["n_significant_terms"] > 0).sum()),
        "gene_list_seconds": seconds[0],
        "enrichment_seconds": seconds[1],
    }
    return pd.DataFrame([row])
