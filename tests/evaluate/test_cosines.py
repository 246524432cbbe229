"""Paper Fig. 3: cosines between tokens and selective features, own label vs the others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellconcepts.evaluate.cosines import COSINE_BINS, own_vs_other, token_feature_cosines


def test_cosines_are_taken_after_the_offset_and_in_blocks():
    tokens = np.array([[2.0, 1.0], [1.0, 3.0], [1.0, 1.0], [0.0, 1.0]])
    offset = np.array([1.0, 1.0])
    directions = np.array([[2.0, 0.0], [0.0, -3.0]])  # columns e1 and -e2, not unit
    blocks = iter([tokens[:3], tokens[3:]])
    cosines = token_feature_cosines(blocks, offset, directions)
    # Rows less the offset: (1, 0), (0, 2), (0, 0) -> left as 0, (-1, 0).
    expected = np.array([[1.0, 0.0], [0.0, -1.0], [0.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosines, expected)


def test_own_tokens_against_the_other_labelled_ones():
    cosines = np.array([[0.9], [0.7], [0.1], [0.8], [-0.2], [0.95]])
    labels = pd.Series(["a", "a", "b", "b", "c", np.nan], dtype=object)
    summary, histograms = own_vs_other(
        cosines, labels, pd.DataFrame({"label": ["a"], "feature": [5]})
    )
    row = summary.iloc[0]
    assert (row.label, row.feature, row.n_own, row.n_other) == ("a", 5, 2, 3)  # NaN left out
    assert row.mean_cosine_own == pytest.approx(0.8)
    assert row.mean_cosine_other == pytest.approx((0.1 + 0.8 - 0.2) / 3)
    assert row.mean_difference == pytest.approx(0.8 - 0.7 / 3)
    # AUC by hand: own {0.9, 0.7} vs other {0.1, 0.8, -0.2}: 5 of 6 pairs ranked right.
    assert row.auc_own_vs_other == pytest.approx(5 / 6)
    own = histograms[histograms.group == "own"]
    other = histograms[histograms.group == "other"]
    assert len(own) == len(COSINE_BINS) - 1
    assert own["count"].sum() == 2 and other["count"].sum() == 3
    assert own.loc[(own.bin_left <= 0.9) & (own.bin_right > 0.9), "count"].item() == 1


def test_a_label_without_other_tokens_has_no_auc():
    labels = pd.Series(["a", "a"], dtype=object)
    summary, _ = own_vs_other(
        np.array([[0.5], [0.4]]), labels, pd.DataFrame({"label": ["a"], "feature": [0]})
    )
    assert summary.n_other.item() == 0
    assert np.isnan(summary.auc_own_vs_other.item())


def best_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": ["t", "t", "t", "u"],
            "label": ["a", "b", "c", "a"],
            "best_feature": [3, 1, 4, 0],
            "best_avg": [0.2, 0.9, 0.5, 1.0],
        }
    )


def test_the_most_selective_labels_of_the_task_come_first():
    from cellconcepts.evaluate.cosines import most_selective_labels

    pairs = most_selective_labels(best_table(), "t", 2)
    assert pairs["label"].tolist() == ["b", "c"]
    assert pairs["feature"].tolist() == [1, 4]
    assert pairs["best_avg"].tolist() == [0.9, 0.5]
    with pytest.raises(ValueError, match="best.csv: no labels of task 'v'"):
        most_selective_labels(best_table(), "v", 2, "best.csv")


def test_cosine_tables_carry_each_labels_best_selectivity():
    from cellconcepts.evaluate.cosines import cosine_tables, most_selective_labels

    pairs = most_selective_labels(best_table(), "t", 2)  # b (feature 1), c (feature 4)
    cosines = np.array([[0.5, 0.0], [0.1, 0.8], [0.3, 0.6], [-0.1, 0.2]])
    labels = pd.Series(["b", "c", "c", "a"], dtype=object)
    summary, counts = cosine_tables(cosines, labels, pairs)
    assert summary.columns[:3].tolist() == ["label", "feature", "best_avg_selectivity"]
    assert summary["best_avg_selectivity"].tolist() == [0.9, 0.5]
    assert summary["feature"].tolist() == [1, 4]
    assert summary.loc[0, "mean_cosine_own"] == pytest.approx(0.5)
    assert summary.loc[0, "mean_cosine_other"] == pytest.approx((0.1 + 0.3 - 0.1) / 3)
    assert summary.loc[1, "mean_cosine_own"] == pytest.approx(0.7)
    assert summary.loc[1, "mean_cosine_other"] == pytest.approx(0.1)
    assert counts.groupby(["label", "group"])["count"].sum().to_dict() == {
        ("b", "other"): 3,
        ("b", "own"): 1,
        ("c", "other"): 2,
        ("c", "own"): 2,
    }


def test_summary_lines_give_the_mean_cosines_and_auc():
    from cellconcepts.evaluate.cosines import summary_lines

    summary = pd.DataFrame(
        {
            "label": ["b"],
            "feature": [7],
            "mean_cosine_own": [0.51234],
            "mean_cosine_other": [-0.1],
            "auc_own_vs_other": [0.875],
        }
    )
    assert summary_lines(summary) == [
        "b (feature 7): mean cosine own 0.512 vs other -0.100, AUC 0.875"
    ]
