"""An independent check of the enrichment: gene lists recomputed with ``gseapy.enrich``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cellconcepts.enrich.gene_lists import GeneLists
from cellconcepts.enrich.genesets import TermMatrix
from cellconcepts.enrich.statistics import benjamini_hochberg

log = logging.getLogger(__name__)

GSEAPY_CHECK_COLUMNS = [
    "list",
    "sample",
    "feature",
    "direction",
    "n_genes",
    "n_terms_ours",
    "n_terms_gseapy",
    "same_terms",
    "same_overlaps",
    "max_relative_p_difference",
    "max_relative_adjusted_p_difference",
]


def gseapy_check(
    gene_lists: GeneLists,
    terms: TermMatrix,
    enrichment: pd.DataFrame,
    n_lists: int,
    seed: int = 0,
) -> pd.DataFrame:
    """Recompute ``n_lists`` of the most enriched gene lists and ``n_lists`` random ones with
    ``gseapy.enrich`` (the same background, and the library restricted to it) and compare term
    by term; raises on any disagreement.

    gseapy adjusts p-values over the terms a list overlaps, this workflow over every term
    tested; the check compares p-values, overlaps, and BH over gseapy's family.
    """
    if n_lists == 0 or enrichment.empty:
        return pd.DataFrame(columns=GSEAPY_CHECK_COLUMNS)
    import gseapy

    top = enrichment.sort_values("p_value").drop_duplicates("list")["list"].head(n_lists)
    others = np.setdiff1d(enrichment["list"].unique(), top)
    rng = np.random.default_rng(seed)
    sampled = rng.choice(others, size=min(n_lists, others.size), replace=False)
    library = {t: list(terms.genes[terms.membership[i].indices]) for i, t in enumerate(terms.terms)}
    records = []
    for kind, list_id in [("top", i) for i in top] + [("random", i) for i in sorted(sampled)]:
        ours = enrichment[enrichment["list"] == list_id].set_index("term")
        query = list(terms.genes[gene_lists.lists[list_id].indices])
        result = gseapy.enrich(
            gene_list=query,
            gene_sets=library,
            background=list(terms.genes),
            outdir=None,
            cutoff=1.0,
            no_plot=True,
        ).results.set_index("Term")
        common = ours.index.intersection(result.index)
        overlap = result.loc[common, "Overlap"].str.split("/").str[0].astype(int)
        ours_p = ours.loc[common, "p_value"].to_numpy()
        ours_bh = benjamini_hochberg(ours_p)
        records.append(
            {
                "list": int(list_id),
                "sample": kind,
                "feature": int(gene_lists.index.loc[list_id, "feature"]),
                "direction": gene_lists.index.loc[list_id, "direction"],
                "n_genes": len(query),
                "n_terms_ours": len(ours),
                "n_terms_gseapy": len(result),
                "same_terms": set(ours.index) == set(result.index),
                "same_overlaps": bool((overlap.to_numpy() == ours.loc[common, "overlap"]).all()),
                "max_relative_p_difference": _max_relative_difference(
                    ours_p, result.loc[common, "P-value"].to_numpy()
                ),
                "max_relative_adjusted_p_difference": _max_relative_difference(
                    ours_bh, result.loc[common, "Adjusted P-value"].to_numpy()
                ),
            }
        )
    check = pd.DataFrame(records, columns=GSEAPY_CHECK_COLUMNS)
    bad = check[
        ~check["same_terms"].astype(bool)
        | ~check["same_overlaps"].astype(bool)
        | ~(check["max_relative_p_difference"] <= 1e-9)  # NaN fails too
        | ~(check["max_relative_adjusted_p_difference"] <= 1e-9)
    ]
    if len(bad):
        raise RuntimeError(f"enrichment disagrees with gseapy.enrich:\n{bad.to_string()}")
    log.info("gseapy.enrich agrees on %d gene lists", len(check))
    return check


def _max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| / max(|a|, |b|) (0 where both are 0, NaN if either is NaN)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    scale = np.maximum(np.abs(a), np.abs(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(scale > 0, np.abs(a - b) / scale, 0.0)
    relative[np.isnan(a) | np.isnan(b)] = np.nan
    return float(np.max(relative)) if not np.isnan(relative).any() else float("nan")
