"""Tests for cellconcepts.cellprofiler.segmentation on hand-built label images with known IoUs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellconcepts.cellprofiler.segmentation import ObjectMatch, match_objects, segmentation_quality

# ----------------------------------------------------------------------------------------------
# Hand-built 6x6 example; label values are arbitrary (not 1..N).
#
#   truth                     pred
#   7  7  .  .  42 42         11 11 .  .  .  .
#   7  7  .  .  42 42         11 11 .  .  9  9
#   .  .  3  .  42 42         .  .  .  .  9  9
#   .  .  3  .  .  .          .  .  .  .  9  9
#   100 100 100 100 . .       5  5  5  6  .  8
#   100 100 100 100 . .       5  5  5  6  .  8
#
# true 7   (4 px)  = pred 11 (4 px)                     -> IoU 4/4 = 1      (perfect match)
# true 42  (6 px) vs pred 9 (6 px), shifted down by one -> IoU 4/8 = 0.5    (not > 0.5)
# true 3   (2 px) overlaps nothing                       -> IoU 0            (missed)
# true 100 (8 px) split into pred 5 (6 px) and pred 6 (2 px)
#                                                        -> IoU 6/8 = 0.75 and 2/8 = 0.25
# pred 8   (2 px) overlaps nothing                       (false positive)
#
# n_true = 4, n_pred = 5.
# threshold 0.5: matches (7, 11), (100, 5)              -> 2: P = 2/5, R = 2/4, F1 = 4/9
# threshold 0.3: + (42, 9) at 0.5                      -> 3: P = 3/5, R = 3/4, F1 = 6/9
# threshold 0.2: (100, 6) at 0.25 is a candidate too, but 100 is taken by 5 -> still 3
# mean IoU over true objects of their best IoU: (1 + 0.5 + 0 + 0.75) / 4 = 0.5625
# ----------------------------------------------------------------------------------------------

TRUTH = np.array(
    [
        [7, 7, 0, 0, 42, 42],
        [7, 7, 0, 0, 42, 42],
        [0, 0, 3, 0, 42, 42],
        [0, 0, 3, 0, 0, 0],
        [100, 100, 100, 100, 0, 0],
        [100, 100, 100, 100, 0, 0],
    ],
    dtype=np.int32,
)
PRED = np.array(
    [
        [11, 11, 0, 0, 0, 0],
        [11, 11, 0, 0, 9, 9],
        [0, 0, 0, 0, 9, 9],
        [0, 0, 0, 0, 9, 9],
        [5, 5, 5, 6, 0, 8],
        [5, 5, 5, 6, 0, 8],
    ],
    dtype=np.uint16,
)


def brute_force_iou(pred: np.ndarray, truth: np.ndarray) -> dict[tuple[int, int], float]:
    """IoU of every (true, pred) label pair by explicit masks (independent of the module)."""
    out = {}
    for t in np.unique(truth[truth > 0]):
        for p in np.unique(pred[pred > 0]):
            a, b = truth == t, pred == p
            out[(int(t), int(p))] = (a & b).sum() / (a | b).sum()
    return out


def test_hand_example_ious_are_as_drawn():
    iou = brute_force_iou(PRED, TRUTH)
    assert iou[(7, 11)] == 1.0
    assert iou[(42, 9)] == 0.5
    assert iou[(100, 5)] == 0.75
    assert iou[(100, 6)] == 0.25
    assert iou[(3, 8)] == 0.0


def test_match_objects_hand_example_at_half():
    m = match_objects(PRED, TRUTH)
    assert m == ObjectMatch(
        n_true=4,
        n_pred=5,
        n_matched=2,
        precision=2 / 5,
        recall=2 / 4,
        f1=4 / 9,
        mean_iou=0.5625,
    )


def test_iou_exactly_half_does_not_match():
    truth = np.zeros((6, 6), dtype=np.int64)
    pred = np.zeros((6, 6), dtype=np.int64)
    truth[0:3, 4:6] = 42
    pred[1:4, 4:6] = 9
    m = match_objects(pred, truth, iou_threshold=0.5)
    assert (m.n_matched, m.mean_iou) == (0, 0.5)
    assert match_objects(pred, truth, iou_threshold=0.49).n_matched == 1


@pytest.mark.parametrize(
    ("threshold", "n_matched"),
    [(0.0, 3), (0.2, 3), (0.3, 3), (0.5, 2), (0.75, 1), (0.99, 1)],
)
def test_match_objects_thresholds(threshold, n_matched):
    m = match_objects(PRED, TRUTH, iou_threshold=threshold)
    assert m.n_matched == n_matched
    assert m.precision == n_matched / 5
    assert m.recall == n_matched / 4
    assert math.isclose(m.f1, 2 * n_matched / 9)
    assert m.mean_iou == 0.5625  # independent of the threshold


def test_relabelling_does_not_change_the_result():
    rng = np.random.default_rng(0)
    t_map = np.zeros(TRUTH.max() + 1, dtype=np.int64)
    t_map[[3, 7, 42, 100]] = rng.permutation([1000, 2, 555, 31])
    p_map = np.zeros(PRED.max() + 1, dtype=np.int64)
    p_map[[5, 6, 8, 9, 11]] = [70000, 1, 3, 12, 4]
    assert match_objects(p_map[PRED], t_map[TRUTH]) == match_objects(PRED, TRUTH)


def test_assignment_maximises_number_of_matches():
    # 1 x 10 strip.  truth: A = cols 0-5 (6 px), B = cols 6-9 (4 px)
    #                pred:  Y = col 0 (1 px),    X = cols 1-7 (7 px)
    # IoU(A, X) = 5/8 = 0.625, IoU(A, Y) = 1/6, IoU(B, X) = 2/9.
    # At threshold 0.1 the best one-to-one assignment is A-Y, B-X (2 matches), although A-X
    # alone has the larger single IoU (0.625 > 1/6 + 2/9).
    truth = np.array([[1, 1, 1, 1, 1, 1, 2, 2, 2, 2]])
    pred = np.array([[5, 4, 4, 4, 4, 4, 4, 4, 0, 0]])
    m = match_objects(pred, truth, iou_threshold=0.1)
    assert m.n_matched == 2
    assert math.isclose(m.mean_iou, (5 / 8 + 2 / 9) / 2)
    # at 0.2, A-Y (1/6) is no candidate: X can match A or B, one match either way
    assert match_objects(pred, truth, iou_threshold=0.2).n_matched == 1
    assert match_objects(pred, truth, iou_threshold=0.5).n_matched == 1


def test_contingency_ious_match_brute_force_on_random_labels():
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 6, size=(12, 12))
    pred = rng.integers(0, 5, size=(12, 12)) * 3
    iou = brute_force_iou(pred, truth)
    best = {t: max(v for (tt, _), v in iou.items() if tt == t) for t, _ in iou}
    m = match_objects(pred, truth, iou_threshold=0.1)
    assert math.isclose(m.mean_iou, np.mean(list(best.values())))
    assert m.n_true == 5 and m.n_pred == 4


def test_empty_images():
    empty = np.zeros((4, 4), dtype=np.int32)
    one = empty.copy()
    one[1:3, 1:3] = 8
    m = match_objects(empty, empty)
    assert (m.n_true, m.n_pred, m.n_matched) == (0, 0, 0)
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    assert math.isnan(m.mean_iou)
    missed = match_objects(empty, one)  # nothing predicted
    assert (missed.precision, missed.recall, missed.f1, missed.mean_iou) == (0.0, 0.0, 0.0, 0.0)
    spurious = match_objects(one, empty)  # nothing to find
    assert (spurious.precision, spurious.recall, spurious.f1) == (0.0, 0.0, 0.0)
    assert math.isnan(spurious.mean_iou)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"pred \(6, 5\) and truth \(6, 6\)"):
        match_objects(PRED[:, :5], TRUTH)


def test_bad_label_images():
    with pytest.raises(ValueError, match="integer label image"):
        match_objects(PRED.astype(float), TRUTH)
    with pytest.raises(ValueError, match="2-D"):
        match_objects(PRED[None], TRUTH[None])
    with pytest.raises(ValueError, match=">= 0"):
        match_objects(-TRUTH, TRUTH)
    with pytest.raises(ValueError, match="iou_threshold"):
        match_objects(PRED, TRUTH, iou_threshold=1.0)


# ----------------------------------------------------------------------------------------------
# segmentation_quality: stack of the hand example, a perfect single object, and an empty pair.
# Pooled: n_true 4 + 1 + 0 = 5, n_pred 5 + 1 + 0 = 6, matched 2 + 1 + 0 = 3
#   precision 3/6, recall 3/5, F1 = 2 * 0.5 * 0.6 / 1.1 = 6/11,
#   mean IoU over the 5 true objects = (1 + 0.5 + 0 + 0.75 + 1) / 5 = 0.65
# ----------------------------------------------------------------------------------------------


def test_segmentation_quality_per_image_and_pooled():
    single = np.zeros((6, 6), dtype=np.int32)
    single[2:5, 2:5] = 17
    empty = np.zeros((6, 6), dtype=np.int32)
    pred = np.stack([PRED.astype(np.int32), single * 2, empty])
    truth = np.stack([TRUTH, single, empty])
    table, summary = segmentation_quality(pred, truth, ["a", "b", "c"])
    assert list(table.columns) == [
        "image_id",
        "n_true",
        "n_pred",
        "n_matched",
        "precision",
        "recall",
        "f1",
        "mean_iou",
    ]
    assert list(table["image_id"]) == ["a", "b", "c"]
    assert list(table["n_matched"]) == [2, 1, 0]
    np.testing.assert_allclose(table["f1"], [4 / 9, 1.0, 1.0])
    np.testing.assert_allclose(table["mean_iou"], [0.5625, 1.0, np.nan])
    assert summary["n_images"] == 3
    assert (summary["n_true"], summary["n_pred"], summary["n_matched"]) == (5, 6, 3)
    assert summary["precision"] == 3 / 6
    assert summary["recall"] == 3 / 5
    assert math.isclose(summary["f1"], 6 / 11)
    assert math.isclose(summary["mean_iou"], 0.65)


def test_segmentation_quality_validates_stacks():
    with pytest.raises(ValueError, match="same number of images, got 1, 1 and 2"):
        segmentation_quality(PRED[None], TRUTH[None], ["a", "b"])
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        segmentation_quality(PRED, TRUTH, ["a"])
    with pytest.raises(ValueError, match=r"image 0 \('a'\).*pred \(1, 6\) and truth \(6, 6\)"):
        segmentation_quality([PRED[:1]], [TRUTH], ["a"])
