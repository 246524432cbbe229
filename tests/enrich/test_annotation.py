"""Per-feature annotation (cellconcepts.enrich.annotation): each feature's best term, the
features the dot plot shows, and a model's one-row summary, on hand-built gene lists and
enrichment tables whose answers are written into them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from enrichment_tables import enrichment_table

from cellconcepts.enrich import gene_lists as feature_genes
from cellconcepts.enrich.annotation import (
    annotate_features,
    model_summary,
    most_enriched_features,
)
from cellconcepts.enrich.genesets import term_matrix

FDR = 0.05


# --------------------------------------------------------------------------- annotate_features


def _gene_lists() -> feature_genes.GeneLists:
    """Feature 0: up and down lists; feature 1: an up list; feature 2: no list."""
    genes = np.array(["A", "B", "C", "D", "E"], dtype=object)
    listed = pd.DataFrame(
        {
            "feature": [0, 0, 0, 1, 1],
            "direction": ["up", "up", "down", "up", "up"],
            "gene": ["A", "B", "C", "D", "E"],
        }
    )
    index = pd.DataFrame({"feature": [0, 0, 1], "direction": ["up", "down", "up"]})
    lists = sp.csr_matrix((np.ones(5), ([0, 0, 1, 2, 2], [0, 1, 2, 3, 4])), shape=(3, genes.size))
    features = pd.DataFrame(
        {
            "feature": [0, 1, 2],
            "n_active": [30, 20, 3],
            "status": [feature_genes.OK, feature_genes.ALL_ACTIVE_CELLS, feature_genes.NO_DE_GENES],
        }
    )
    return feature_genes.GeneLists(
        genes=genes, lists=lists, index=index, genes_table=listed, features=features
    )


ANNOTATE_ENRICHMENT = enrichment_table(
    [
        # feature 0: the up list's best p has FDR 0.2; the down list's term has a larger p but
        # FDR 0.01 (a smaller family of small p-values): FDR decides
        dict(feature=0, direction="up", list=0, term="T_up", p_value=1e-4, fdr=0.2, rank=1,
             overlap=2, list_size=2, genes="A;B"),
        dict(feature=0, direction="up", list=0, term="T_up2", p_value=1e-3, fdr=0.3, rank=2,
             overlap=1, list_size=2, genes="A"),
        dict(feature=0, direction="down", list=1, term="T_down", p_value=5e-4, fdr=0.01,
             rank=1, overlap=1, list_size=1, genes="C"),
        # feature 1: same FDR, the smaller p wins; then term size
        dict(feature=1, direction="up", list=2, term="T_b", p_value=0.02, fdr=0.04, rank=2,
             overlap=1, list_size=2, term_size=3, genes="D"),
        dict(feature=1, direction="up", list=2, term="T_a", p_value=0.01, fdr=0.04, rank=1,
             overlap=2, list_size=2, term_size=30, genes="D;E"),
        dict(feature=1, direction="up", list=2, term="T_c", p_value=0.02, fdr=0.04, rank=2,
             overlap=1, list_size=2, term_size=2, genes="E"),
    ]
)  # fmt: skip


def test_annotate_features_best_term_by_fdr_first() -> None:
    gene_lists = _gene_lists()
    labels = pd.Series(["t=a (0.50)", "", "t=b (0.40)"], name="selective_labels")
    table = annotate_features(gene_lists, ANNOTATE_ENRICHMENT, labels, FDR)

    assert list(table.columns) == [
        "feature",
        "selective_labels",
        "n_active",
        "status",
        "best_direction",
        "best_term",
        "best_fdr",
        "best_overlap",
        "list_size",
        "best_genes",
        "n_significant_terms",
    ]
    assert list(table["feature"]) == [0, 1, 2]
    assert list(table["selective_labels"]) == ["t=a (0.50)", "", "t=b (0.40)"]
    assert list(table["status"]) == ["ok", "all_active_cells", "no_de_genes"]

    f0, f1, f2 = (table.iloc[i] for i in range(3))
    assert (f0["best_direction"], f0["best_term"], f0["best_fdr"]) == ("down", "T_down", 0.01)
    assert (f0["best_overlap"], f0["list_size"], f0["best_genes"]) == (1, 1, "C")
    assert (f1["best_direction"], f1["best_term"], f1["best_fdr"]) == ("up", "T_a", 0.04)
    assert (f1["best_overlap"], f1["list_size"], f1["best_genes"]) == (2, 2, "D;E")
    assert pd.isna(f2["best_term"])
    assert pd.isna(f2["best_direction"])
    assert np.isnan(f2["best_fdr"])
    # terms with FDR < 0.05: feature 0 -> T_down; feature 1 -> all three; feature 2 -> none
    assert list(table["n_significant_terms"]) == [1, 3, 0]
    for threshold, expected in [(0.25, [2, 3, 0]), (0.04, [1, 0, 0])]:
        other = annotate_features(gene_lists, ANNOTATE_ENRICHMENT, labels, threshold)
        assert list(other["n_significant_terms"]) == expected
    assert "selective_labels" not in gene_lists.features.columns  # the input is not modified


def test_annotate_features_same_p_breaks_ties_by_term_size() -> None:
    enrichment = ANNOTATE_ENRICHMENT[ANNOTATE_ENRICHMENT["term"] != "T_a"]
    table = annotate_features(_gene_lists(), enrichment, pd.Series(["", "", ""]), FDR)
    assert table.loc[1, "best_term"] == "T_c"  # same FDR and p as T_b, fewer genes


def test_annotate_features_without_anyenrichment_table() -> None:
    empty = ANNOTATE_ENRICHMENT.iloc[:0]
    table = annotate_features(_gene_lists(), empty, pd.Series(["", "", ""]), FDR)
    assert table["best_term"].isna().all()
    assert list(table["n_significant_terms"]) == [0, 0, 0]


def test_annotate_features_on_selective_gene_lists() -> None:
    # 6 cells, screened genes G1..G3 and control NTC; feature 0 is active on G1 cells only,
    # feature 1 on nothing
    codes = sp.csr_matrix(
        np.array([[1.0, 0], [1.0, 0], [0, 0], [0, 0], [0, 0], [0, 0]], dtype=np.float64)
    )
    labels = pd.Series(["G1", "G1", "G2", "G2", "G3", "NTC"])
    lists = feature_genes.selective_gene_lists(
        codes, labels, controls=["NTC"], min_selectivity=0.2, top_n=1
    )
    assert list(lists.genes) == ["G1", "G2", "G3"]
    assert list(lists.index["feature"]) == [0]
    enrichment = enrichment_table(
        [dict(feature=0, direction="selective", list=0, term="T", p_value=0.01, fdr=0.01, rank=1)]
    )
    table = annotate_features(lists, enrichment, pd.Series(["x", ""]), FDR)
    assert list(table["best_term"].fillna("-")) == ["T", "-"]
    assert list(table["status"]) == [feature_genes.OK, feature_genes.NO_SELECTIVE_GENES]
    assert list(table["n_significant_terms"]) == [1, 0]


# --------------------------------------------------------------------------- most_enriched_features


def test_most_enriched_features_smallest_best_fdr_below_the_threshold() -> None:
    features = pd.DataFrame(
        {"feature": [0, 1, 2, 3, 4], "best_fdr": [0.01, np.nan, 0.001, 0.2, 0.01]}
    )
    assert most_enriched_features(features, 0.05, 2) == [2, 0]
    assert most_enriched_features(features, 0.05, 5) == [2, 0, 4]  # a tie keeps table order
    assert most_enriched_features(features, 0.005, 5) == [2]
    assert most_enriched_features(features, 0.001, 5) == []  # FDR < threshold is strict


# --------------------------------------------------------------------------- model_summary


def test_model_summary_counts_lists_background_and_significant_features() -> None:
    # background A-F: T1 (A, B) and T2 (C, D, E) are tested, T3 has one gene inside (below
    # min_size), F is in no term
    terms = term_matrix(
        {"T1": ["A", "B"], "T2": ["C", "D", "E"], "T3": ["A", "Z"]},
        list("ABCDEF"),
        min_size=2,
        max_size=10,
    )
    features = pd.DataFrame({"feature": [0, 1, 2], "n_significant_terms": [1, 3, 0]})
    row = model_summary("m", "screen", 3, _gene_lists(), terms, features, (1.5, 0.25))
    expected = pd.DataFrame(
        [
            {
                "variant": "m",
                "mode": "screen",
                "n_features": 3,
                "n_gene_lists": 3,
                "background_genes": 6,
                "background_genes_in_no_term": 1,
                "library_terms": 3,
                "terms_tested": 2,
                "features_with_significant_term": 2,
                "gene_list_seconds": 1.5,
                "enrichment_seconds": 0.25,
            }
        ]
    )
    pd.testing.assert_frame_equal(row, expected)
