"""GO recovery on simulated screens (cellconcepts.enrich.recovery): how a planted term fares
among a gene list's terms, and the perfect-list reference.

Expectations are written by hand into the tables (ranks, FDRs, term groups) or worked out
exactly (hypergeometric tails and Benjamini-Hochberg by hand).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellconcepts.enrich.genesets import term_matrix
from cellconcepts.enrich.recovery import (
    perfect_list_recovery,
    planted_term_outcome,
    with_perfect_list,
)

FDR = 0.05


def _hits(rows: list[tuple[str, int, float, int, int]]) -> pd.DataFrame:
    """One gene list's terms: (term, rank, fdr, overlap, term_group)."""
    return pd.DataFrame(rows, columns=["term", "rank", "fdr", "overlap", "term_group"])


# --------------------------------------------------------------------------- planted_term_outcome


def test_planted_term_unique_at_the_top_and_significant_is_recovered() -> None:
    hits = _hits([("T_plant", 1, 0.001, 3, 0), ("T_other", 2, 0.2, 1, 1)])
    assert planted_term_outcome(hits, "T_plant", FDR) == {
        "planted_rank": 1,
        "planted_fdr": 0.001,
        "planted_overlap": 3,
        "n_tied_at_top": 1,
        "unique_top": True,
        "ties_identical": True,
        "recovered": True,
        "recovered_strict": True,
    }


def test_planted_term_tied_with_an_identical_term_is_recovered_but_not_strictly() -> None:
    hits = _hits([("T_twin", 1, 0.01, 2, 4), ("T_plant", 1, 0.01, 2, 4), ("T_other", 3, 0.3, 1, 0)])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert out["planted_rank"] == 1
    assert out["n_tied_at_top"] == 2
    assert out["unique_top"] is False
    assert out["ties_identical"] is True
    assert out["recovered"] is True
    assert out["recovered_strict"] is False


@pytest.mark.parametrize(
    "others",
    [
        [("T_other", 1, 0.01, 2, 7)],  # tied with a different term
        [("T_twin", 1, 0.01, 2, 4), ("T_other", 1, 0.01, 2, 7)],  # one identical, one not
    ],
)
def test_planted_term_tied_with_a_different_term_is_not_recovered(others: list) -> None:
    hits = _hits([("T_plant", 1, 0.01, 2, 4), *others])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert out["planted_rank"] == 1
    assert out["n_tied_at_top"] == 1 + len(others)
    assert out["unique_top"] is False
    assert out["ties_identical"] is False
    assert out["recovered"] is False
    assert out["recovered_strict"] is False


@pytest.mark.parametrize("fdr", [0.05, 0.2])
def test_planted_term_at_the_top_but_not_significant_is_not_recovered(fdr: float) -> None:
    hits = _hits([("T_plant", 1, fdr, 3, 0), ("T_other", 2, 0.5, 1, 1)])
    out = planted_term_outcome(hits, "T_plant", FDR)  # FDR < 0.05 is strict
    assert out["planted_fdr"] == fdr
    assert out["unique_top"] is True
    assert out["ties_identical"] is True
    assert out["recovered"] is False
    assert out["recovered_strict"] is False


def test_planted_term_second_is_not_recovered() -> None:
    hits = _hits([("T_a", 1, 0.001, 4, 1), ("T_b", 1, 0.001, 4, 2), ("T_plant", 3, 0.01, 2, 0)])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert out == {
        "planted_rank": 3,
        "planted_fdr": 0.01,
        "planted_overlap": 2,
        "n_tied_at_top": 2,
        "unique_top": False,
        "ties_identical": False,
        "recovered": False,
        "recovered_strict": False,
    }
    hits = _hits([("T_a", 1, 0.001, 4, 1), ("T_plant", 2, 0.01, 2, 0)])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert out["planted_rank"] == 2
    assert (out["recovered"], out["recovered_strict"], out["unique_top"]) == (False,) * 3


def test_planted_term_absent() -> None:
    hits = _hits([("T_a", 1, 0.001, 4, 1), ("T_b", 1, 0.001, 4, 2), ("T_c", 3, 0.5, 1, 3)])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert np.isnan(out["planted_rank"])
    assert np.isnan(out["planted_fdr"])
    assert out["planted_overlap"] == 0
    assert out["n_tied_at_top"] == 2
    assert not any(out[k] for k in ["unique_top", "ties_identical", "recovered"])
    assert out["recovered_strict"] is False

    empty = planted_term_outcome(_hits([]), "T_plant", FDR)
    assert empty["n_tied_at_top"] == 0
    assert empty["recovered"] is False


# --------------------------------------------------------------------------- perfect_list_recovery


def test_perfect_gene_lists_are_the_go_recovery_reference() -> None:
    library = {
        "A": ["a", "b", "c"],
        "A twin": ["A", "B", "C", "zz"],  # the same genes inside the background
        "C": ["d", "e"],
        "wide": ["a", "d", "f", "g", "h"],
    }
    background = term_matrix(library, list("abcdefghij"), min_size=2, max_size=10)
    groups = pd.DataFrame(
        {
            "gene_group": ["g1", "g2", "g3"],
            "go_term": ["A", "C", "wide"],
            "genes": ["a;b;c", "d;e;notscreened", "f;g"],
        }
    )
    table = perfect_list_recovery(groups, background, fdr=0.5).set_index("group")
    assert table["perfect_list_size"].tolist() == [3, 2, 2]
    assert table.loc["g1", "perfect_recovered"] and not table.loc["g1", "perfect_recovered_strict"]
    assert table.loc["g2", "perfect_recovered_strict"]
    # f;g lies inside 'wide' only: its term ranks first, with p = C(5,2)/C(10,2) = 10/45,
    # adjusted over the 4 terms tested (Benjamini-Hochberg, rank 1): 40/45, above the FDR
    assert table.loc["g3", "perfect_rank"] == 1
    assert table.loc["g3", "perfect_fdr"] == pytest.approx(40 / 45)
    assert not table.loc["g3", "perfect_recovered"]


def test_with_perfect_list_adds_the_reference_per_group_and_per_model() -> None:
    per_group = pd.DataFrame(
        {"variant": ["v", "v"], "group": ["g1", "g2"], "recovered": [True, False]}
    )
    per_model = pd.DataFrame({"variant": ["v"], "groups": [2], "recovered": [1]})
    perfect = pd.DataFrame(
        {
            "group": ["g2", "g1"],
            "perfect_list_size": [3, 2],
            "perfect_rank": [1, 2],
            "perfect_fdr": [0.01, 0.3],
            "perfect_recovered": [True, False],
            "perfect_recovered_strict": [False, False],
        }
    )
    groups, models = with_perfect_list(per_group, per_model, perfect)
    expected = pd.DataFrame(
        {
            "variant": ["v", "v"],
            "group": ["g1", "g2"],
            "recovered": [True, False],
            "perfect_list_size": [2, 3],
            "perfect_rank": [2, 1],
            "perfect_fdr": [0.3, 0.01],
            "perfect_recovered": [False, True],
            "perfect_recovered_strict": [False, False],
        }
    )
    pd.testing.assert_frame_equal(groups, expected)
    assert list(models.columns) == [
        "variant",
        "groups",
        "recovered",
        "perfect_list",
        "perfect_list_strict",
    ]
    assert models.loc[0, "perfect_list"] == 0.5  # g2 of g1, g2
    assert models.loc[0, "perfect_list_strict"] == 0.0
    assert list(per_model.columns) == ["variant", "groups", "recovered"]  # input not modified
