"""Over-representation of gene-set terms in many gene lists at once (hypergeometric test, BH).

Gene lists are the rows of a sparse (lists, genes) 0/1 matrix over the same background as a
:class:`~cellconcepts.genesets.TermMatrix`. One sparse product gives every list x term overlap;
p-values are computed only where the overlap is non-zero (elsewhere p = 1), and
Benjamini-Hochberg runs within each gene list (a scRNA feature's up and down lists are two
families) over *all* terms tested, so a list's FDR does not depend on how many terms it happened
to hit. No Python loop runs over terms.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import hypergeom

from cellconcepts.enrich.genesets import TermMatrix

log = logging.getLogger(__name__)

ENRICHMENT_COLUMNS = [
    "list",
    "term",
    "overlap",
    "list_size",
    "term_size",
    "term_group",
    "background_size",
    "fold_enrichment",
    "p_value",
    "fdr",
    "rank",
    "genes",
]


def hypergeometric_p(
    overlap: np.ndarray, term_size: np.ndarray, list_size: np.ndarray, background_size: int
) -> np.ndarray:
    """P(X >= overlap) when ``list_size`` genes are drawn from ``background_size`` genes of
    which ``term_size`` belong to the term (one-sided over-representation, as Enrichr/gseapy)."""
    overlap = np.asarray(overlap)
    return hypergeom.sf(overlap - 1, background_size, term_size, list_size)


def benjamini_hochberg(
    p_values: np.ndarray, groups: np.ndarray | None = None, n_tests: np.ndarray | int | None = None
) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, within each group.

    ``n_tests`` (one number, or one per p-value) is the size of each group's family when only
    some of its p-values are given: the missing ones count as 1, as if they had been passed.
    Without groups and ``n_tests`` this equals ``scipy.stats.false_discovery_control(p)``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values: expected a 1-D array, got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_values: expected values in [0, 1] without NaN")
    groups = np.zeros(p.size, dtype=np.int64) if groups is None else np.asarray(groups)
    if groups.shape != p.shape:
        raise ValueError(f"groups: expected shape {p.shape}, got {groups.shape}")
    if p.size == 0:
        return p.copy()
    order = np.lexsort((p, groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    group_sizes = np.diff(np.r_[starts, p.size])
    rank = np.arange(p.size) - np.repeat(starts, group_sizes) + 1
    if n_tests is None:
        family = np.repeat(group_sizes, group_sizes)
    else:
        family = np.broadcast_to(np.asarray(n_tests), p.shape)[order]
        if (family < np.repeat(group_sizes, group_sizes)).any():
            raise ValueError("n_tests: smaller than the number of p-values given for a group")
    scaled = p[order] * family / rank
    # cumulative minimum from the largest p-value down, within each group
    reverse = pd.Series(scaled[::-1]).groupby(sorted_groups[::-1], sort=False).cummin()
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(reverse.to_numpy()[::-1], 1.0)
    return adjusted


def enrich_lists(
    lists: sp.spmatrix | np.ndarray, terms: TermMatrix, *, with_genes: bool = True
) -> pd.DataFrame:
    """Enrichment of every gene list (row of ``lists``, over ``terms.genes``) in every term.

    Returns one row per (list, term) with overlap >= 1 (the others have p = 1), sorted by list
    then rank, with columns :data:`ENRICHMENT_COLUMNS`. ``rank`` is 1 for the smallest p-value
    of a list; tied p-values share the smallest rank. ``term_group`` is shared by terms with
    identical genes inside the background, which no list can tell apart. Empty lists test
    nothing and give no rows.
    """
    query = sp.csr_matrix(lists, dtype=np.float64)
    if query.shape[1] != terms.genes.size:
        raise ValueError(
            f"gene lists: expected {terms.genes.size} columns (the background genes), "
            f"got {query.shape[1]}"
        )
    query.sum_duplicates()
    query.eliminate_zeros()
    query.data[:] = 1.0
    list_size = np.asarray(query.sum(axis=1)).ravel().astype(np.int64)
    term_size = terms.sizes
    overlap = (query @ terms.membership.T).tocoo()
    rows, cols = overlap.row.astype(np.int64), overlap.col.astype(np.int64)
    hits = np.rint(overlap.data).astype(np.int64)
    background = int(terms.genes.size)
    p = hypergeometric_p(hits, term_size[cols], list_size[rows], background)
    fdr = benjamini_hochberg(p, groups=rows, n_tests=terms.n_terms)
    expected = list_size[rows] * term_size[cols] / background
    table = pd.DataFrame(
        {
            "list": rows,
            "term": terms.terms[cols],
            "overlap": hits,
            "list_size": list_size[rows],
            "term_size": term_size[cols],
            "term_group": terms.same_genes[cols],
            "background_size": background,
            "fold_enrichment": hits / expected,
            "p_value": p,
            "fdr": fdr,
            "_col": cols,
        }
    )
    table = table.sort_values(["list", "p_value", "term_size", "term"], kind="stable")
    table["rank"] = (
        table.groupby("list")["p_value"].rank(method="min").astype(np.int64)
        if len(table)
        else pd.Series(dtype=np.int64)
    )
    table = table.reset_index(drop=True)
    table["genes"] = overlap_genes(query, terms, table["list"], table["_col"]) if with_genes else ""
    log.info(
        "%d gene lists x %d terms: %d overlapping pairs, %d with FDR < 0.05",
        query.shape[0],
        terms.n_terms,
        len(table),
        int((table["fdr"] < 0.05).sum()),
    )
    return table[ENRICHMENT_COLUMNS]


def overlap_genes(
    query: sp.csr_matrix, terms: TermMatrix, list_index: pd.Series, term_index: pd.Series
) -> np.ndarray:
    """';'-joined genes shared by each (list, term) pair, genes in background order."""
    pair_lists = list_index.to_numpy()
    pair_terms = term_index.to_numpy()
    if pair_lists.size == 0:
        return np.array([], dtype=object)
    # One sparse product per pair block: rows of `shared` are pairs, columns genes.
    left = query[pair_lists]
    right = terms.membership[pair_terms]
    shared = left.multiply(right).tocsr()
    shared.eliminate_zeros()
    shared.sort_indices()
    names = terms.genes[shared.indices]
    splits = np.split(names, shared.indptr[1:-1])
    return np.array([";".join(chunk) for chunk in splits], dtype=object)


def by_feature(table: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """An `enrich_lists` table with each list's ``feature`` and ``direction`` (from the gene
    lists' ``index``, one row per list) in front: the enrichment table a model writes."""
    table = table.join(index, on="list")
    return table[["feature", "direction", *ENRICHMENT_COLUMNS]]
