"""The gseapy cross-check of the enrichment statistics (cellconcepts.enrich.gseapy_check) on a
small library whose best lists are worked out with exact hypergeometric tails (``math.comb``).
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellconcepts.enrich import gene_lists as feature_genes
from cellconcepts.enrich import genesets
from cellconcepts.enrich import statistics as enrich
from cellconcepts.enrich.gseapy_check import (
    GSEAPY_CHECK_COLUMNS,
    _max_relative_difference,
    gseapy_check,
)


def _exact_tail(k: int, big_k: int, n: int, m: int) -> float:
    """P(X >= k), X ~ hypergeometric: n draws from m genes of which big_k are in the term."""
    total = sum(
        (math.comb(big_k, x) * math.comb(m - big_k, n - x) for x in range(k, min(big_k, n) + 1)),
        start=0,
    )
    return float(Fraction(total, math.comb(m, n)))


# --------------------------------------------------------------------------- gseapy_check

BACKGROUND = [f"G{i:02d}" for i in range(40)]
LIBRARY = {
    "T_big": [f"G{i:02d}" for i in range(0, 8)],
    "T_mid": [f"G{i:02d}" for i in range(8, 14)],
    "T_mid_twin": [*(f"G{i:02d}" for i in range(8, 14)), "OUTSIDE1"],  # same genes inside
    "T_overlap": ["G05", "G06", "G07", "G08", "G09", "G20"],
    "T_small": ["G30", "G31", "G32"],
    "T_wide": [f"G{i:02d}" for i in range(0, 40, 3)],
    "T_tail": [f"G{i:02d}" for i in range(25, 40)],
    "T_out": ["OUTSIDE1", "OUTSIDE2", "G39"],  # 1 gene inside: below min_size
}
LISTS = [
    [f"G{i:02d}" for i in range(0, 8)],  # exactly T_big
    ["G08", "G09", "G10", "G11", "G12"],  # T_mid and its twin
    ["G30", "G31", "G05"],
    ["G20", "G21", "G33", "G03"],
    ["G25", "G27", "G29", "G35", "G15", "G06"],
    ["G14", "G18"],
]


@pytest.fixture
def check_inputs() -> tuple[feature_genes.GeneLists, genesets.TermMatrix, pd.DataFrame]:
    genes = np.array(BACKGROUND, dtype=object)
    column = {g: j for j, g in enumerate(BACKGROUND)}
    rows = [i for i, genes_ in enumerate(LISTS) for _ in genes_]
    cols = [column[g] for genes_ in LISTS for g in genes_]
    lists = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(LISTS), genes.size))
    index = pd.DataFrame(
        {"feature": [0, 0, 1, 2, 3, 5], "direction": ["up", "down", "up", "up", "up", "down"]}
    )
    gene_lists = feature_genes.GeneLists(
        genes=genes,
        lists=lists,
        index=index,
        genes_table=pd.DataFrame(),
        features=pd.DataFrame({"feature": range(6)}),
    )
    terms = genesets.term_matrix(LIBRARY, genes, min_size=2, max_size=30)
    enrichment = enrich.enrich_lists(lists, terms).join(index, on="list")
    enrichment = enrichment[["feature", "direction", *enrich.ENRICHMENT_COLUMNS]]
    return gene_lists, terms, enrichment


def test_gseapy_check_agrees_on_a_small_library(check_inputs) -> None:
    pytest.importorskip("gseapy")
    logging.getLogger("gseapy").setLevel(logging.WARNING)
    gene_lists, terms, enrichment = check_inputs
    assert "T_out" not in set(terms.terms)
    assert len(set(enrichment["list"])) == len(LISTS)  # every list hits some term

    # independently: the best p-value of each list (exact tails), the two smallest are "top"
    restricted = {t: set(g) & set(BACKGROUND) for t, g in LIBRARY.items() if t != "T_out"}
    best_p = [
        min(
            _exact_tail(len(set(genes) & members), len(members), len(genes), len(BACKGROUND))
            for members in restricted.values()
            if set(genes) & members
        )
        for genes in LISTS
    ]
    top = [int(i) for i in np.argsort(best_p, kind="stable")[:2]]
    assert top == [0, 1]

    check = gseapy_check(gene_lists, terms, enrichment, n_lists=2, seed=0)
    assert list(check.columns) == GSEAPY_CHECK_COLUMNS
    assert list(check["sample"]) == ["top", "top", "random", "random"]
    assert list(check["list"][:2]) == top
    random_lists = list(check["list"][2:])
    assert random_lists == sorted(random_lists)
    assert set(random_lists) <= {2, 3, 4, 5}
    assert len(set(random_lists)) == 2
    for row in check.itertuples(index=False):
        assert row.feature == gene_lists.index.loc[row.list, "feature"]
        assert row.direction == gene_lists.index.loc[row.list, "direction"]
        assert row.n_genes == len(LISTS[row.list])
        assert row.n_terms_ours == (enrichment["list"] == row.list).sum()
        assert row.n_terms_gseapy == row.n_terms_ours
    assert check["same_terms"].all()
    assert check["same_overlaps"].all()
    assert (check["max_relative_p_difference"] <= 1e-9).all()
    assert (check["max_relative_adjusted_p_difference"] <= 1e-9).all()

    again = gseapy_check(gene_lists, terms, enrichment, n_lists=2, seed=0)
    pd.testing.assert_frame_equal(again, check)  # deterministic for a seed

    everything = gseapy_check(gene_lists, terms, enrichment, n_lists=10)
    assert sorted(everything["list"]) == list(range(len(LISTS)))
    assert set(everything["sample"]) == {"top"}


def test_gseapy_check_without_lists_is_empty(check_inputs) -> None:
    gene_lists, terms, enrichment = check_inputs
    for out in (
        gseapy_check(gene_lists, terms, enrichment, n_lists=0),
        gseapy_check(gene_lists, terms, enrichment.iloc[:0], n_lists=3),
    ):
        assert out.empty
        assert list(out.columns) == GSEAPY_CHECK_COLUMNS


def test_gseapy_check_raises_on_a_tampered_table(check_inputs) -> None:
    pytest.importorskip("gseapy")
    logging.getLogger("gseapy").setLevel(logging.WARNING)
    gene_lists, terms, enrichment = check_inputs
    # the smallest p-value belongs to a "top" list, which is always checked
    row = enrichment["p_value"].idxmin()
    assert enrichment.loc[row, "p_value"] < 0.5

    tampered = enrichment.copy()
    tampered.loc[row, "p_value"] *= 2
    with pytest.raises(RuntimeError, match="disagrees with gseapy"):
        gseapy_check(gene_lists, terms, tampered, n_lists=2)

    tampered = enrichment.copy()
    tampered.loc[row, "overlap"] += 1
    with pytest.raises(RuntimeError, match="disagrees with gseapy"):
        gseapy_check(gene_lists, terms, tampered, n_lists=2)


def test_max_relative_difference() -> None:
    assert _max_relative_difference(np.array([0.1, 0.5]), np.array([0.1, 0.5])) == 0.0
    assert _max_relative_difference(np.array([]), np.array([])) == 0.0
    assert _max_relative_difference(np.array([0.0, 0.0]), np.array([0.0, 0.0])) == 0.0
    assert _max_relative_difference(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    assert _max_relative_difference(np.array([0.0]), np.array([1e-300])) == 1.0
    assert _max_relative_difference(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == pytest.approx(
        0.2 / 2.2, rel=1e-12
    )
    assert _max_relative_difference(np.array([-1.0]), np.array([1.0])) == 2.0
    assert np.isnan(_max_relative_difference(np.array([np.nan, 1.0]), np.array([0.5, 1.0])))
    assert np.isnan(_max_relative_difference(np.array([0.5, 1.0]), np.array([0.5, np.nan])))
    assert np.isnan(_max_relative_difference(np.array([0.0]), np.array([np.nan])))
