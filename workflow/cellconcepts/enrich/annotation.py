"""One row per feature: the labels it is selective for, its gene lists and its best GO term."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.enrich.gene_lists import GeneLists
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
