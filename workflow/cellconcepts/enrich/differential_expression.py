"""Differential expression between two groups of cells, for many pairs of groups at once.

Groups are the columns of sparse (cells, pairs) 0/1 matrices, so every pair's per-gene means and
variances come from two sparse products; Welch's t-test is then vectorised over pairs x genes.
Expression is log1p-normalised (scanpy's convention); fold changes are computed on the linear
scale, as ``scanpy.tl.rank_genes_groups`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats

log = logging.getLogger(__name__)

FOLD_CHANGE_EPS = 1e-9


@dataclass(frozen=True)
class GroupMoments:
    """Per group (rows) and gene (columns): cell count, mean and unbiased variance."""

    n: np.ndarray  # (P,)
    mean: np.ndarray  # (P, G)
    var: np.ndarray  # (P, G)


@dataclass(frozen=True)
class GroupSums:
    """Per group (rows) and gene (columns): cell count, sum and sum of squares."""

    n: np.ndarray  # (P,)
    sums: np.ndarray  # (P, G)
    squares: np.ndarray  # (P, G)

    def complement(self, total: GroupSums) -> GroupSums:
        """The cells outside each group, given the whole data's sums (``total`` has one row)."""
        return GroupSums(total.n - self.n, total.sums - self.sums, total.squares - self.squares)

    def moments(self) -> GroupMoments:
        """Means and unbiased variances (NaN variance for a group of one cell)."""
        n = self.n.astype(np.float64)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.sums / n
            var = (self.squares - n * mean**2) / (n - 1)
        var = np.where(np.isnan(var), np.nan, np.maximum(var, 0.0))  # rounding can go below 0
        return GroupMoments(n=self.n.astype(np.float64), mean=mean, var=var)


def group_sums(expression: sp.spmatrix | np.ndarray, groups: sp.spmatrix | np.ndarray) -> GroupSums:
    """Count, sum and sum of squares of every gene within every group (a column of ``groups``,
    a (cells, P) 0/1 matrix): two sparse products, whatever the number of groups."""
    membership = sp.csc_matrix(groups, dtype=np.float64)
    if membership.shape[0] != expression.shape[0]:
        raise ValueError(
            f"groups: expected {expression.shape[0]} rows (one per cell), got {membership.shape[0]}"
        )
    squares = expression.multiply(expression) if sp.issparse(expression) else np.square(expression)
    return GroupSums(
        n=np.asarray(membership.sum(axis=0)).ravel(),
        sums=_dense(membership.T @ expression),
        squares=_dense(membership.T @ squares),
    )


def welch_t_test(a: GroupMoments, b: GroupMoments) -> tuple[np.ndarray, np.ndarray]:
    """Welch's unequal-variance t statistic and two-sided p-value for a vs b, per pair and gene.

    Matches ``scipy.stats.ttest_ind(equal_var=False)``; where both groups are constant the
    statistic is +-inf (different means, p = 0) or NaN (equal means), which callers treat as p=1.
    """
    va = a.var / a.n[:, None]
    vb = b.var / b.n[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        denominator = np.sqrt(va + vb)
        t = (a.mean - b.mean) / denominator
        df = (va + vb) ** 2 / (va**2 / (a.n[:, None] - 1) + vb**2 / (b.n[:, None] - 1))
    df = np.where(np.isnan(df), 1.0, df)
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return t, p


def log2_fold_change(mean_a: np.ndarray, mean_b: np.ndarray) -> np.ndarray:
    """log2 of the ratio of linear-scale means, from means of log1p expression (as scanpy)."""
    return np.log2(np.expm1(mean_a) + FOLD_CHANGE_EPS) - np.log2(np.expm1(mean_b) + FOLD_CHANGE_EPS)


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float64)
