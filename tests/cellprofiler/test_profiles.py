"""Tests for cellconcepts.cellprofiler.profiles with hand-computed per-image aggregates."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from cellconcepts.cellprofiler.profiles import META_COLUMNS, ProfileReport, image_profiles

INF = np.inf
NAN = np.nan

# ----------------------------------------------------------------------------------------------
# Hand-worked example: 6 cells in 3 images (img4 has no cells); features a, b, c, k, n.
#
#   image  object_number  a     b     c   k   n     well
#   img1   1              1     2     0   5   1     "A01"
#   img1   2              3     4     0   5   2     "A01"
#   img1   3              8     NaN   1   5   3     "A01"
#   img2   1              2     inf   3   5   NaN   "A02"
#   img2   2              -inf  6     5   5   NaN   "A02"
#   img3   1              10    1     2   5   4     "A03"
#
# Non-finite values of a cell are ignored.
# mean:    a: img1 12/3=4, img2 2, img3 10     median: a: img1 3, img2 2, img3 10
#          b: img1 6/2=3,  img2 6, img3 1              b: img1 3, img2 6, img3 1
#          c: img1 1/3,    img2 4, img3 2              c: img1 0, img2 4, img3 2
#          k: 5 everywhere -> constant, dropped; n: NaN for img2 (has cells) -> dropped.
# img4 (no cells) = per-feature median over img1..img3:
#   mean:   a median(4, 2, 10) = 4;  b median(3, 6, 1) = 3;  c median(1/3, 4, 2) = 2
#   median: a median(3, 2, 10) = 3;  b median(3, 6, 1) = 3;  c median(0, 4, 2) = 2
# ----------------------------------------------------------------------------------------------


def hand_cells() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["img1", "img1", "img1", "img2", "img2", "img3"],
            "object_number": [1, 2, 3, 1, 2, 1],
            "a": [1.0, 3.0, 8.0, 2.0, -INF, 10.0],
            "b": [2.0, 4.0, NAN, INF, 6.0, 1.0],
            "c": [0.0, 0.0, 1.0, 3.0, 5.0, 2.0],
            "k": [5, 5, 5, 5, 5, 5],
            "n": [1.0, 2.0, 3.0, NAN, NAN, 4.0],
            "well": ["A01", "A01", "A01", "A02", "A02", "A03"],
        }
    )


IMAGES = ["img1", "img2", "img3", "img4"]


def test_mean_profiles_hand_example():
    profiles, report = image_profiles(hand_cells(), IMAGES, how="mean")
    assert list(profiles.columns) == ["image_id", "a", "b", "c"]
    assert list(profiles["image_id"]) == IMAGES
    assert list(profiles.index) == [0, 1, 2, 3]
    expected = np.array(
        [
            [4.0, 3.0, 1.0 / 3.0],
            [2.0, 6.0, 4.0],
            [10.0, 1.0, 2.0],
            [4.0, 3.0, 2.0],
        ]
    )
    np.testing.assert_allclose(profiles[["a", "b", "c"]].to_numpy(), expected, rtol=1e-12)
    assert (profiles[["a", "b", "c"]].dtypes == np.float64).all()
    assert report == ProfileReport(
        n_features_in=5,
        n_dropped_nan=1,
        n_dropped_constant=1,
        n_images_without_cells=1,
        dropped=["n", "k"],
    )


def test_median_profiles_hand_example():
    profiles, report = image_profiles(hand_cells(), IMAGES, how="median")
    expected = np.array(
        [
            [3.0, 3.0, 0.0],
            [2.0, 6.0, 4.0],
            [10.0, 1.0, 2.0],
            [3.0, 3.0, 2.0],
        ]
    )
    np.testing.assert_array_equal(profiles[["a", "b", "c"]].to_numpy(), expected)
    assert report.dropped == ["n", "k"]


def test_rows_follow_image_ids_order():
    order = ["img3", "img4", "img1", "img2"]
    profiles, _ = image_profiles(hand_cells(), order)
    assert list(profiles["image_id"]) == order
    np.testing.assert_allclose(profiles["a"].to_numpy(), [10.0, 4.0, 4.0, 2.0])
    np.testing.assert_allclose(profiles["b"].to_numpy(), [1.0, 3.0, 3.0, 6.0])


def test_meta_columns_are_not_features_even_if_numeric():
    cells = hand_cells()
    cells["image_index"] = [0, 0, 0, 1, 1, 2]
    cells["cell_label"] = [7, 8, 9, 3, 4, 1]
    assert {"image_index", "cell_label", "object_number"} <= set(META_COLUMNS)
    profiles, report = image_profiles(cells, IMAGES)
    assert report.n_features_in == 5
    assert list(profiles.columns) == ["image_id", "a", "b", "c"]


def test_explicit_feature_columns_and_custom_id_column():
    cells = hand_cells().rename(columns={"image_id": "site"})
    profiles, report = image_profiles(cells, IMAGES, id_column="site", feature_columns=["b", "a"])
    assert list(profiles.columns) == ["site", "b", "a"]
    assert report.n_features_in == 2
    assert report.dropped == []
    np.testing.assert_allclose(profiles["b"].to_numpy(), [3.0, 6.0, 1.0, 3.0])


def test_relative_variance_criterion_for_constant_features():
    # "big" varies by 1e-4 around 1e6: var = 2.5e-9 <= 1e-12 * (1e12 + 1) -> constant.
    # "small" varies by 1e-3 around 0: var = 2.5e-7 > 1e-12 * (2.5e-7 + 1) -> kept.
    cells = pd.DataFrame(
        {
            "image_id": ["x", "y"],
            "big": [1e6, 1e6 + 1e-4],
            "small": [0.0, 1e-3],
        }
    )
    profiles, report = image_profiles(cells, ["x", "y"])
    assert list(profiles.columns) == ["image_id", "small"]
    assert report.n_dropped_constant == 1
    assert report.dropped == ["big"]


def test_logs_counts_and_warns_about_images_without_cells(caplog):
    ids = ["img1", "img2", "img3"] + [f"empty{i}" for i in range(7)]
    with caplog.at_level(logging.INFO, logger="cellconcepts.cellprofiler.profiles"):
        profiles, report = image_profiles(hand_cells(), ids)
    assert report.n_images_without_cells == 7
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "7 of 10 images" in text
    assert "empty4" in text and "empty5" not in text  # at most 5 named
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("5 features in, 1 dropped as NaN, 1 dropped as constant, 3 kept" in m for m in infos)
    # every empty image gets the median over the 3 images with cells
    np.testing.assert_allclose(profiles["a"].to_numpy()[3:], 4.0)


def test_bad_how_names_argument():
    with pytest.raises(ValueError, match="how"):
        image_profiles(hand_cells(), IMAGES, how="max")


def test_missing_id_column():
    with pytest.raises(ValueError, match="'plate_image'"):
        image_profiles(hand_cells(), IMAGES, id_column="plate_image")


def test_unknown_image_ids_are_named():
    with pytest.raises(ValueError, match=r"3 cell rows .*img2.*img3"):
        image_profiles(hand_cells(), ["img1", "img4"])


def test_duplicate_image_ids_rejected():
    with pytest.raises(ValueError, match="duplicates.*img1"):
        image_profiles(hand_cells(), ["img1", "img2", "img3", "img1"])


def test_no_surviving_feature_raises():
    cells = hand_cells()[["image_id", "k", "n"]]
    with pytest.raises(ValueError, match="no feature column survives"):
        image_profiles(cells, IMAGES)


def test_single_image_with_cells_leaves_only_constant_features():
    cells = hand_cells()
    cells = cells[cells["image_id"] == "img1"]
    with pytest.raises(ValueError, match="1 of 4 images have cells"):
        image_profiles(cells, IMAGES)


def test_non_numeric_explicit_feature_rejected():
    with pytest.raises(ValueError, match="non-numeric.*'well'"):
        image_profiles(hand_cells(), IMAGES, feature_columns=["a", "well"])


def test_missing_explicit_feature_rejected():
    with pytest.raises(ValueError, match="'zzz'"):
        image_profiles(hand_cells(), IMAGES, feature_columns=["a", "zzz"])


def test_empty_cells_rejected():
    cells = hand_cells().iloc[:0]
    with pytest.raises(ValueError, match="no cell rows"):
        image_profiles(cells, IMAGES)


def test_matches_independent_groupby_on_random_data():
    rng = np.random.default_rng(0)
    n_cells = 200
    ids = [f"im{i}" for i in range(12)]
    cells = pd.DataFrame(
        {
            "image_id": rng.choice(ids[:-1], size=n_cells),  # im11 has no cells
            "f0": rng.normal(size=n_cells),
            "f1": rng.exponential(size=n_cells),
        }
    )
    cells.loc[rng.choice(n_cells, 20, replace=False), "f0"] = np.nan
    profiles, report = image_profiles(cells, ids, how="median")
    expected = cells.groupby("image_id")[["f0", "f1"]].median().reindex(ids)
    expected.iloc[-1] = expected.iloc[:-1].median()
    np.testing.assert_allclose(profiles[["f0", "f1"]].to_numpy(), expected.to_numpy())
    assert report.n_images_without_cells == 1
