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
