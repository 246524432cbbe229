"""Quantile thresholding of CellProfiler profiles into sparse signed codes (paper baseline).

A profile matrix X (n_images, F) is turned into codes in {-1, 0, +1}: per feature, the alpha
and 1 - alpha quantiles over reference rows (e.g. control images) are the lower and upper
bounds; an image is +1 above the upper bound, -1 below the lower bound and 0 (not stored)
otherwise. As in :func:`cellconcepts.evaluate.selectivity`, a feature is *active* when its code
is non-zero. Alpha is chosen by bisection so that the mean number of active features per image
matches a target (e.g. the mean L0 of a learned dictionary), which makes the baseline
comparable at equal sparsity. The mean active count is non-decreasing in alpha because the
bounds move towards the median as alpha grows.

Quantiles use numpy's default ("linear") interpolation; the bisection sorts the reference and
the profile columns once and then evaluates each alpha with a column-wise binary search, so one
evaluation costs O(F log n) and never loops over features in Python.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "ThresholdedProfiles",
    "UnreachableTargetError",
    "activation",
    "alpha_for_target",
    "mean_active",
    "quantile_bounds",
    "nearest_alpha",
    "reference_rows",
    "selectivity_sweep",
    "threshold_profiles",
]

#: The open interval (0, 0.5) of alpha is searched between these two values.
ALPHA_MIN = 1e-12
ALPHA_MAX = 0.5 - 1e-12

_CHUNK_ROWS = 4096  # row block for the direct (non-sorted) active count


class UnreachableTargetError(ValueError):
    """The target mean active count lies outside what any alpha in (0, 0.5) can give."""


def _as_profiles(X: np.ndarray | pd.DataFrame) -> np.ndarray:
    """X as a finite float64 (n, F) array with n >= 1 and F >= 1."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"X: expected a 2-D (n_images, n_features) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"X: expected at least one row and one feature, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"X: expected finite values, got {int(bad.sum())} NaN/inf entries "
            f"(first at row {row}, feature {col})"
        )
    return arr


def _as_reference(reference: np.ndarray, n: int) -> np.ndarray:
    """reference as a boolean (n,) mask with at least two True rows."""
    mask = np.asarray(reference)
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(
            f"reference: expected a boolean mask of shape ({n},) (one entry per row of X), got "
            f"dtype {mask.dtype} shape {mask.shape}"
        )
    n_ref = int(mask.sum())
    if n_ref < 2:
        raise ValueError(f"reference: expected at least 2 reference rows, got {n_ref}")
    return mask


def _check_alpha(alpha: float) -> float:
    if not (np.isfinite(alpha) and 0.0 < alpha < 0.5):
        raise ValueError(f"alpha: expected a value in the open interval (0, 0.5), got {alpha}")
    return float(alpha)


# --------------------------------------------------------------------------------------------
# quantiles and codes
# --------------------------------------------------------------------------------------------


def _sorted_quantile(sorted_ref: np.ndarray, q: float) -> np.ndarray:
    """Per-column q quantile of column-sorted data, exactly as np.quantile(method="linear")."""
    m = sorted_ref.shape[0]
    h = (m - 1) * q
    below = min(int(np.floor(h)), m - 1)
    above = min(below + 1, m - 1)
    gamma = h - below
    a, b = sorted_ref[below], sorted_ref[above]
    diff = b - a
    # numpy's _lerp: interpolate from the nearer end for accuracy.
    return b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma


def quantile_bounds(
    X: np.ndarray | pd.DataFrame, reference: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (lower, upper) = the alpha and 1 - alpha quantiles over the reference rows.

    Linear interpolation as in ``np.quantile``; ``alpha`` in (0, 0.5); ``reference`` a boolean
    mask over the rows of X with at least 2 rows.
    """
    arr = _as_profiles(X)
    mask = _as_reference(reference, arr.shape[0])
    alpha = _check_alpha(alpha)
    sorted_ref = np.sort(arr[mask], axis=0)
    return _sorted_quantile(sorted_ref, alpha), _sorted_quantile(sorted_ref, 1.0 - alpha)


def _as_bounds(lower: np.ndarray, upper: np.ndarray, n_features: int) -> tuple[np.ndarray, ...]:
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    if lo.shape != (n_features,) or hi.shape != (n_features,):
        raise ValueError(
            f"lower, upper: expected shape ({n_features},) (one bound per feature of X), got "
            f"{lo.shape} and {hi.shape}"
        )
    crossed = lo > hi
    if crossed.any():
        raise ValueError(
            f"lower, upper: expected lower <= upper, got lower > upper for {int(crossed.sum())} "
            f"features (first: feature {int(np.flatnonzero(crossed)[0])})"
        )
    return lo, hi


def activation(X: np.ndarray | pd.DataFrame, lower: np.ndarray, upper: np.ndarray) -> sp.csr_matrix:
    """Signed codes (n, F) float32 CSR: +1 where X > upper, -1 where X < lower, else not stored.

    Strict inequalities: a value equal to a bound is not active.
    """
    arr = _as_profiles(X)
    lo, hi = _as_bounds(lower, upper, arr.shape[1])
    above = arr > hi
    active = above | (arr < lo)
    rows, cols = np.nonzero(active)  # row-major, so already in CSR order
    data = np.where(above[rows, cols], 1.0, -1.0).astype(np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=arr.shape, dtype=np.float32)


def _count_active(arr: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> int:
    """Number of entries strictly outside [lower, upper], in row blocks to bound memory."""
    total = 0
    for start in range(0, arr.shape[0], _CHUNK_ROWS):
        block = arr[start : start + _CHUNK_ROWS]
        total += int(np.count_nonzero(block > upper)) + int(np.count_nonzero(block < lower))
    return total


def mean_active(X: np.ndarray | pd.DataFrame, reference: np.ndarray, alpha: float) -> float:
    """Mean over all rows of X of the number of active features at quantile level ``alpha``."""
    arr = _as_profiles(X)
    lower, upper = quantile_bounds(arr, reference, alpha)
    return _count_active(arr, lower, upper) / arr.shape[0]


# --------------------------------------------------------------------------------------------
# choosing alpha
# --------------------------------------------------------------------------------------------


def _colwise_searchsorted(sorted_cols: np.ndarray, values: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted(sorted_cols[:, j], values[j], side)`` for every column j at once.

    A binary search run on all columns together: ceil(log2(n + 1)) vectorised steps.
    """
    n, n_features = sorted_cols.shape
    cols = np.arange(n_features)
    lo = np.zeros(n_features, dtype=np.intp)
    hi = np.full(n_features, n, dtype=np.intp)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        val = sorted_cols[np.minimum(mid, n - 1), cols]
        go_right = (val < values) if side == "left" else (val <= values)
        go_right &= open_
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(open_ & ~go_right, mid, hi)


class _ActiveCounter:
    """Mean active count as a function of alpha, with reference and columns of X sorted once."""

    def __init__(self, X: np.ndarray | pd.DataFrame, reference: np.ndarray) -> None:
        arr = _as_profiles(X)
        mask = _as_reference(reference, arr.shape[0])
        self.n = arr.shape[0]
        self.sorted_ref = np.sort(arr[mask], axis=0)
        self.sorted_x = np.sort(arr, axis=0)

    def bounds(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        return _sorted_quantile(self.sorted_ref, alpha), _sorted_quantile(
            self.sorted_ref, 1.0 - alpha
        )

    def mean_active(self, alpha: float) -> float:
        lower, upper = self.bounds(alpha)
        n_below = _colwise_searchsorted(self.sorted_x, lower, "left").sum()
        n_above = (self.n - _colwise_searchsorted(self.sorted_x, upper, "right")).sum()
        return float(n_below + n_above) / self.n


def _search(counter: _ActiveCounter, target: float, tol: float, max_iter: int) -> tuple:
    """Bisection for alpha; returns (alpha, mean_active) of the closest evaluated alpha."""
    if not np.isfinite(target) or target < 0:
        raise ValueError(f"target: expected a finite mean active count >= 0, got {target}")
    if not tol >= 0:
        raise ValueError(f"tol: expected a tolerance >= 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter: expected at least 1 iteration, got {max_iter}")
    lo, hi = ALPHA_MIN, ALPHA_MAX
    f_lo, f_hi = counter.mean_active(lo), counter.mean_active(hi)
    if target < f_lo - tol or target > f_hi + tol:
        raise UnreachableTargetError(
            f"target: a mean active count of {target:g} is unreachable (tol {tol:g}); the "
            f"reachable range is [{f_lo:.6g}, {f_hi:.6g}] for alpha in "
            f"[{ALPHA_MIN:g}, 0.5 - {0.5 - ALPHA_MAX:.0e}]"
        )
    best_alpha, best_value = (lo, f_lo) if abs(f_lo - target) <= abs(f_hi - target) else (hi, f_hi)
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        value = counter.mean_active(mid)
        if abs(value - target) < abs(best_value - target):
            best_alpha, best_value = mid, value
        if abs(value - target) <= tol:
            break
        if value < target:
            lo = mid
        else:
            hi = mid
    return best_alpha, best_value


def alpha_for_target(
    X: np.ndarray | pd.DataFrame,
    reference: np.ndarray,
    target: float,
    *,
    tol: float = 0.5,
    max_iter: int = 60,
) -> float:
    """Alpha in (0, 0.5) whose mean active count is ``target`` within ``tol``, by bisection.

    Ties and discrete values make some counts impossible; then the evaluated alpha whose mean
    active count is closest to ``target`` is returned. Raises :class:`UnreachableTargetError` (a
    ValueError) stating the reachable range when ``target`` is more than ``tol`` below the count
    at alpha -> 0 or above the count at alpha -> 0.5.
    """
    return _search(_ActiveCounter(X, reference), target, tol, max_iter)[0]


def reference_rows(obs: pd.DataFrame, reference: str) -> np.ndarray:
    """Rows whose distribution defines the quantiles: control images or all images."""
    if reference == "all":
        return np.ones(len(obs), dtype=bool)
    mask = obs["is_control"].to_numpy(bool)
    if mask.sum() < 2:
        raise ValueError(
            f"cellprofiler.reference is 'controls' but the token store has {int(mask.sum())} "
            "control rows; at least 2 are needed"
        )
    return mask


def nearest_alpha(matrix: np.ndarray, reference: np.ndarray, target: float) -> float:
    """Alpha for the target mean active count; where no alpha reaches it, the alpha of the
    nearest reachable count, with a warning (images far outside the reference range are
    active at any alpha, which sets a floor)."""
    try:
        return alpha_for_target(matrix, reference, target)
    except UnreachableTargetError as error:
        low = mean_active(matrix, reference, ALPHA_MIN)
        alpha = ALPHA_MIN if target < low else ALPHA_MAX
        logger.warning("cellprofiler.target_active: %s; using alpha %.3g instead", error, alpha)
        return alpha


def selectivity_sweep(
    matrix: np.ndarray,
    reference: np.ndarray,
    targets: Sequence[float],
    labels: pd.Series,
) -> pd.DataFrame:
    """Selectivity against sparsity: for each target mean active count, the alpha reached,
    the mean active count and the mean over labels of the best avg selectivity of any
    feature. Targets that fall back onto an alpha already listed are left out."""
    from cellconcepts.evaluate.selectivity import selectivity

    rows: list[dict[str, float | str]] = []
    for point in sorted(set(targets)):
        alpha = nearest_alpha(matrix, reference, point)
        if any(row["alpha"] == alpha for row in rows):
            continue  # an unreachable target fell back onto a point already listed
        codes = activation(matrix, *quantile_bounds(matrix, reference, alpha))
        rows.append(
            {
                "method": "CellProfiler",
                "target": point,
                "alpha": alpha,
                "mean_active": codes.nnz / codes.shape[0],
                "mean_best_avg": float(selectivity(codes, labels).avg.max(axis=1).mean()),
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ThresholdedProfiles:
    """The baseline's codes at the target sparsity, their bounds and the sparsity sweep."""

    codes: sp.csr_matrix  # (n_images, F) signed codes at the alpha for the target
    thresholds: pd.DataFrame  # feature, lower, upper, alpha, target, mean_active
    sweep: pd.DataFrame  # as `selectivity_sweep`, over the sweep targets and the target


def threshold_profiles(
    matrix: np.ndarray,
    names: Sequence[str],
    obs: pd.DataFrame,
    *,
    reference: str,
    target_active: float,
    sweep_targets: Sequence[float],
    task: Mapping[str, Any],
    min_label_size: int = 1,
) -> ThresholdedProfiles:
    """Profiles (rows in the order of ``obs``, columns ``names``) thresholded into codes at the
    target mean active count (alpha by bisection, quantiles over the ``reference`` rows:
    "controls" or "all"), and the sweep over ``sweep_targets`` and the target with the mean
    best avg selectivity on ``task``'s labels (`cellconcepts.evaluate.labels.task_labels`)."""
    from cellconcepts.evaluate.labels import task_labels

    ref = reference_rows(obs, reference)
    alpha = nearest_alpha(matrix, ref, target_active)
    lower, upper = quantile_bounds(matrix, ref, alpha)
    active = activation(matrix, lower, upper)
    n_active = active.nnz / active.shape[0]
    logger.info(
        "alpha %.4g gives %.2f active features per image (target %g) of %d",
        alpha,
        n_active,
        target_active,
        len(names),
    )
    bounds = pd.DataFrame({"feature": names, "lower": lower, "upper": upper})
    table = bounds.assign(alpha=alpha, target=target_active, mean_active=n_active)
    points = set(sweep_targets) | {target_active}
    labels = task_labels(obs, task, min_label_size)
    return ThresholdedProfiles(
        active.tocsr(), table, selectivity_sweep(matrix, ref, points, labels)
    )
