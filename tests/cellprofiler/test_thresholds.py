"""Tests for cellconcepts.cellprofiler.thresholds with hand-worked or independently computed
values."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellconcepts.cellprofiler.thresholds import (
    ALPHA_MAX,
    ALPHA_MIN,
    UnreachableTargetError,
    _ActiveCounter,
    _colwise_searchsorted,
    activation,
    alpha_for_target,
    mean_active,
    nearest_alpha,
    quantile_bounds,
    selectivity_sweep,
    threshold_profiles,
)


def independent_mean_active(X: np.ndarray, reference: np.ndarray, alpha: float) -> float:
    """Mean active count straight from np.quantile and comparisons (no module code)."""
    lower = np.quantile(X[reference], alpha, axis=0)
    upper = np.quantile(X[reference], 1 - alpha, axis=0)
    return float(((X > upper) | (X < lower)).sum(axis=1).mean())


@pytest.fixture(scope="module")
def normal_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    X = rng.normal(size=(300, 500))
    # 150 reference rows. At alpha -> 0 the bounds sit just inside the reference min and max,
    # so per feature the 2 extreme reference rows and ~2/151 of the 150 other rows are active:
    # about 500 * (2 + 150 * 2/151) / 300 = 6.6 features per row, so target 10 is reachable
    # (with 60 reference rows the floor is about 16).
    reference = np.zeros(300, dtype=bool)
    reference[:150] = True
    return X, reference


# ----------------------------------------------------------------------------------------------
# activation: hand-built 4x3 case
#
#   X                 lower = [0, -1, 2]   upper = [1, 1, 2]
#   [ 0.5  -2.0  2.0]   ->  [ 0  -1   0]   (0.5 inside; -2 < -1; 2 == both bounds)
#   [ 1.0   1.5  3.0]   ->  [ 0  +1  +1]   (1 == upper: not active)
#   [-0.1   0.0  1.9]   ->  [-1   0  -1]
#   [ 0.0  -1.0  2.1]   ->  [ 0   0  +1]   (0 == lower, -1 == lower: not active)
# ----------------------------------------------------------------------------------------------

X_HAND = np.array(
    [
        [0.5, -2.0, 2.0],
        [1.0, 1.5, 3.0],
        [-0.1, 0.0, 1.9],
        [0.0, -1.0, 2.1],
    ]
)
LOWER_HAND = np.array([0.0, -1.0, 2.0])
UPPER_HAND = np.array([1.0, 1.0, 2.0])
CODES_HAND = np.array(
    [
        [0, -1, 0],
        [0, 1, 1],
        [-1, 0, -1],
        [0, 0, 1],
    ],
    dtype=np.float32,
)


def test_activation_hand_example():
    codes = activation(X_HAND, LOWER_HAND, UPPER_HAND)
    assert isinstance(codes, sp.csr_matrix)
    assert codes.dtype == np.float32
    assert codes.shape == (4, 3)
    np.testing.assert_array_equal(codes.toarray(), CODES_HAND)
    assert codes.nnz == 6  # zeros are not stored
    assert codes.has_canonical_format


def test_activation_rejects_bad_bounds():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        activation(X_HAND, LOWER_HAND[:2], UPPER_HAND)
    with pytest.raises(ValueError, match="lower > upper for 1 features"):
        activation(X_HAND, np.array([0.0, 2.0, 0.0]), UPPER_HAND)


# ----------------------------------------------------------------------------------------------
# quantile bounds
# Reference rows 0..4 of a feature holding 0, 1, 2, 3, 4 (row 5 = 100, not reference):
# alpha = 0.1: position (5 - 1) * 0.1 = 0.4 -> 0.4; 1 - alpha: position 3.6 -> 3.6.
# Second feature holds 10 * the first: 4 and 36.
# ----------------------------------------------------------------------------------------------


def test_quantile_bounds_hand_example():
    col = np.array([3.0, 0.0, 4.0, 1.0, 2.0, 100.0])
    X = np.column_stack([col, 10 * col])
    reference = np.array([True] * 5 + [False])
    lower, upper = quantile_bounds(X, reference, 0.1)
    np.testing.assert_allclose(lower, [0.4, 4.0], rtol=1e-12)
    np.testing.assert_allclose(upper, [3.6, 36.0], rtol=1e-12)


@pytest.mark.parametrize("alpha", [1e-9, 0.01, 0.05, 0.1234, 0.25, 0.37, 0.499])
def test_quantile_bounds_equal_np_quantile(normal_data, alpha):
    X, reference = normal_data
    lower, upper = quantile_bounds(X, reference, alpha)
    np.testing.assert_array_equal(lower, np.quantile(X[reference], alpha, axis=0))
    np.testing.assert_array_equal(upper, np.quantile(X[reference], 1 - alpha, axis=0))


@pytest.mark.parametrize("alpha", [0.0, 0.5, -0.1, 0.7, float("nan")])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="alpha"):
        quantile_bounds(X_HAND, np.ones(4, dtype=bool), alpha)


def test_reference_needs_two_rows():
    with pytest.raises(ValueError, match="at least 2 reference rows, got 1"):
        quantile_bounds(X_HAND, np.array([True, False, False, False]), 0.1)
    with pytest.raises(ValueError, match="boolean mask of shape"):
        quantile_bounds(X_HAND, np.array([0, 1]), 0.1)


def test_non_finite_profiles_rejected():
    X = X_HAND.copy()
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2, feature 1"):
        mean_active(X, np.ones(4, dtype=bool), 0.1)


# ----------------------------------------------------------------------------------------------
# mean active count
# ----------------------------------------------------------------------------------------------


def test_mean_active_hand_example():
    # One feature, reference rows 0, 1 hold 0 and 1 -> lower = alpha, upper = 1 - alpha.
    # Row 0 (0) is below, row 1 (1) is above for every alpha in (0, 0.5); row 2 (0.3) is below
    # only when alpha > 0.3; row 3 (0.5) is never active.
    X = np.array([[0.0], [1.0], [0.3], [0.5]])
    reference = np.array([True, True, False, False])
    assert mean_active(X, reference, 0.2) == 2 / 4
    assert mean_active(X, reference, 0.4) == 3 / 4


def test_mean_active_matches_independent_and_is_monotone(normal_data):
    X, reference = normal_data
    alphas = np.linspace(0.001, 0.499, 40)
    values = np.array([mean_active(X, reference, a) for a in alphas])
    expected = np.array([independent_mean_active(X, reference, a) for a in alphas])
    np.testing.assert_array_equal(values, expected)
    assert np.all(np.diff(values) >= 0)
    assert values[-1] > values[0]


def test_sorted_counter_matches_direct_count_with_ties():
    # Integer-valued data: many values equal a bound, where strictness matters.
    rng = np.random.default_rng(1)
    X = rng.integers(0, 5, size=(50, 30)).astype(np.float64)
    reference = rng.random(50) < 0.3
    counter = _ActiveCounter(X, reference)
    for alpha in [ALPHA_MIN, 0.05, 0.1, 0.25, 0.3, 0.45, ALPHA_MAX]:
        assert counter.mean_active(alpha) == independent_mean_active(X, reference, alpha)


def test_colwise_searchsorted_matches_numpy():
    rng = np.random.default_rng(3)
    S = np.sort(rng.integers(0, 6, size=(17, 9)).astype(np.float64), axis=0)
    values = rng.integers(-1, 7, size=9).astype(np.float64)
    for side in ("left", "right"):
        expected = [np.searchsorted(S[:, j], values[j], side=side) for j in range(9)]
        np.testing.assert_array_equal(_colwise_searchsorted(S, values, side), expected)


# ----------------------------------------------------------------------------------------------
# choosing alpha
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [10.0, 50.0, 100.0])
def test_alpha_for_target_hits_target_within_one(normal_data, target):
    X, reference = normal_data
    alpha = alpha_for_target(X, reference, target)
    assert 0 < alpha < 0.5
    assert abs(independent_mean_active(X, reference, alpha) - target) <= 1.0


def test_codes_at_the_alpha_for_a_target(normal_data):
    X, reference = normal_data
    alpha = alpha_for_target(X, reference, 50.0)
    lower, upper = quantile_bounds(X, reference, alpha)
    codes = activation(X, lower, upper)
    assert abs(codes.nnz / codes.shape[0] - 50.0) <= 1.0
    np.testing.assert_array_equal(lower, np.quantile(X[reference], alpha, axis=0))
    np.testing.assert_array_equal(upper, np.quantile(X[reference], 1 - alpha, axis=0))
    dense = codes.toarray()
    np.testing.assert_array_equal(dense == 1, X > upper)
    np.testing.assert_array_equal(dense == -1, X < lower)
    assert codes.nnz / codes.shape[0] == independent_mean_active(X, reference, alpha)


def test_unreachable_target_raises_with_range(normal_data):
    X, reference = normal_data
    # alpha -> 0.5: both bounds approach the reference median (between two of the 150 values),
    # so all 500 features are active; alpha -> 0: about 6.6 (see normal_data).
    with pytest.raises(UnreachableTargetError, match=r"reachable range is \[.*, 500\]"):
        alpha_for_target(X, reference, 500.6)
    with pytest.raises(ValueError, match="reachable range is"):
        alpha_for_target(X, reference, 1.0)


def test_step_function_returns_closest_count():
    # mean_active is 0.5 for alpha <= 0.3 and 0.75 above (see test_mean_active_hand_example):
    # 0.6 can only be approximated (closest 0.5), 0.7 is closest to 0.75.
    X = np.array([[0.0], [1.0], [0.3], [0.5]])
    reference = np.array([True, True, False, False])
    a = alpha_for_target(X, reference, 0.6, tol=0.01)
    assert a <= 0.3 and mean_active(X, reference, a) == 0.5
    a = alpha_for_target(X, reference, 0.7, tol=0.01)
    assert a > 0.3 and mean_active(X, reference, a) == 0.75
    with pytest.raises(UnreachableTargetError, match=r"\[0.5, 0.75\]"):
        alpha_for_target(X, reference, 0.1, tol=0.01)
    with pytest.raises(UnreachableTargetError, match=r"\[0.5, 0.75\]"):
        alpha_for_target(X, reference, 2.0, tol=0.01)


def test_nearest_alpha_falls_back_to_the_reachable_end(normal_data, caplog):
    X, reference = normal_data
    assert nearest_alpha(X, reference, 10) == alpha_for_target(X, reference, 10)
    with caplog.at_level(logging.WARNING, logger="cellconcepts.cellprofiler.thresholds"):
        assert nearest_alpha(X, reference, 1.0) == ALPHA_MIN  # below the floor of ~6.6
        assert nearest_alpha(X, reference, 1000) == ALPHA_MAX  # above all 500 features
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "target_active" in warnings[0]


def test_selectivity_sweep_reaches_targets_and_scores_labels(normal_data):
    X, reference = normal_data
    labels = pd.Series(np.where(np.arange(len(X)) % 2, "a", "b"))
    table = selectivity_sweep(X, reference, [10, 100, 1.0, 1000, 1.5], labels)
    assert list(table.columns) == ["method", "target", "alpha", "mean_active", "mean_best_avg"]
    # 1.0 and 1.5 both fall back onto the lowest alpha: listed once
    assert list(table["target"]) == [1.0, 10, 100, 1000]
    for alpha, value in zip(table["alpha"], table["mean_active"], strict=True):
        assert value == independent_mean_active(X, reference, alpha)
    assert table["mean_best_avg"].between(-1, 1).all()


def test_bad_tolerance_is_refused(normal_data):
    X, reference = normal_data
    with pytest.raises(ValueError, match="tol"):
        alpha_for_target(X, reference, 10, tol=-1)


def test_threshold_profiles_codes_bounds_and_sweep():
    """The whole procedure on 40 images: codes and bounds at the alpha for the target, from
    np.quantile over the control rows, and the sweep over the targets (the target once) scored
    on the task's labels without the rare one."""
    from cellconcepts.evaluate.selectivity import selectivity

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 20))
    gene = np.where(np.arange(40) < 20, "ctrl", np.where(np.arange(40) % 2, "a", "b"))
    gene[39] = "rare"
    obs = pd.DataFrame({"is_control": np.arange(40) < 20, "gene": gene})
    names = [f"f{j}" for j in range(20)]
    result = threshold_profiles(
        X,
        names,
        obs,
        reference="controls",
        target_active=4.0,
        sweep_targets=[8.0, 4.0, 2.0],
        task={"name": "gene", "column": "gene"},
        min_label_size=2,
    )
    table = result.thresholds
    assert list(table.columns) == ["feature", "lower", "upper", "alpha", "target", "mean_active"]
    assert table.feature.tolist() == names and (table.target == 4.0).all()
    alpha = table.alpha[0]
    assert (table.alpha == alpha).all()
    controls = X[:20]
    np.testing.assert_array_equal(table.lower, np.quantile(controls, alpha, axis=0))
    np.testing.assert_array_equal(table.upper, np.quantile(controls, 1 - alpha, axis=0))
    expected = np.where(X > table.upper.to_numpy(), 1, np.where(X < table.lower.to_numpy(), -1, 0))
    assert sp.isspmatrix_csr(result.codes) and result.codes.dtype == np.float32
    np.testing.assert_array_equal(result.codes.toarray(), expected)
    n_active = float((expected != 0).sum(axis=1).mean())
    assert (table.mean_active == n_active).all() and abs(n_active - 4.0) <= 0.5
    sweep = result.sweep
    assert sweep.target.tolist() == [2.0, 4.0, 8.0] and (sweep.method == "CellProfiler").all()
    reference = np.arange(40) < 20
    for row in sweep.itertuples():
        assert row.mean_active == independent_mean_active(X, reference, row.alpha)
    at_target = sweep.set_index("target").loc[4.0]
    assert at_target.alpha == alpha and at_target.mean_active == n_active
    labels = pd.Series(gene).where(gene != "rare")
    scores = selectivity(sp.csr_matrix(expected.astype(np.float32)), labels)
    assert scores.labels.tolist() == ["a", "b", "ctrl"]
    assert at_target.mean_best_avg == float(scores.avg.max(axis=1).mean())
