"""Bootstrap intervals for the scores the reports compare: balanced accuracy and per-label
recall of a probe, and the resampling units and token weights that the comparison of
dictionaries over units and seeds uses (`evaluate.variant_comparison`).

Resampling is by *unit*: tokens that share a unit (e.g. the sites of one well) are drawn
together, since they are not independent; without units every token is its own unit. A
resample is a vector of token weights (how often its unit was drawn), so every statistic is a
weighted version of its point estimate and no resampled copy of the data is built.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.evaluate.labels import label_series
from cellconcepts.evaluate.selectivity import avg_from_counts


def unit_codes(obs: pd.DataFrame, columns: list[str] | tuple[str, ...] | None) -> np.ndarray:
    """One integer per row naming its resampling unit: rows equal on every column of
    ``columns`` share one; no columns means every row is its own unit."""
    if not columns:
        return np.arange(len(obs), dtype=np.int64)
    missing = [c for c in columns if c not in obs.columns]
    if missing:
        raise ValueError(
            f"resample_unit: obs has no column {missing[0]!r}; columns: {list(obs.columns)}"
        )
    codes, _ = pd.MultiIndex.from_frame(obs[list(columns)].astype(str)).factorize()
    return codes.astype(np.int64)


def split_units(
    obs: pd.DataFrame, columns: list[str] | tuple[str, ...] | None
) -> np.ndarray | None:
    """`unit_codes` where the dataset names units (``resample_unit``), else None: what a
    held-out split keeps together for a task without ``group_by``."""
    return unit_codes(obs, columns) if columns else None


def unit_weights(units: np.ndarray, replicates: int, seed: int) -> Iterator[np.ndarray]:
    """Token weights of ``replicates`` bootstrap resamples: units drawn with replacement, as
    many as there are, each token weighted by how often its unit was drawn."""
    units = np.asarray(units)
    uniq, inverse = np.unique(units, return_inverse=True)
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        drawn = np.bincount(rng.integers(0, uniq.shape[0], uniq.shape[0]), minlength=len(uniq))
        yield drawn[inverse].astype(np.float64)


def interval(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, ...]:
    """Percentile interval of bootstrap ``samples`` along ``axis`` (NaN samples ignored)."""
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():  # an all-NaN column (nothing to resample) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=axis)
    return low, high


def recalls(
    index: np.ndarray, correct: np.ndarray, n_classes: int, weights: np.ndarray
) -> np.ndarray:
    """Weighted recall of every class from each row's class ``index`` and whether it was
    predicted right (NaN where a class has no weight)."""
    total = np.bincount(index, weights=weights, minlength=n_classes)
    hit = np.bincount(index, weights=weights * correct, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hit / total, np.nan)


def recall_intervals(
    y: np.ndarray | pd.Series,
    pred: np.ndarray,
    units: np.ndarray,
    *,
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per-class recall and balanced accuracy (the mean recall, row ``label='BTA'``) with
    bootstrap intervals over units; columns label, n_tokens, recall, low, high."""
    y = label_series(y, "y").astype(str).to_numpy()
    pred = np.asarray(pred).astype(str)
    classes, index = np.unique(y, return_inverse=True)
    correct = (y == pred).astype(np.float64)
    n = len(classes)
    point = recalls(index, correct, n, np.ones(len(y)))
    samples = np.stack(
        [recalls(index, correct, n, w) for w in unit_weights(units, replicates, seed)]
    )
    bta_samples = np.nanmean(samples, axis=1)
    low, high = interval(samples, level)
    bta_low, bta_high = interval(bta_samples, level)
    counts = pd.Series(y).value_counts()
    table = pd.DataFrame(
        {
            "label": [*classes, "BTA"],
            "n_tokens": [int(counts[c]) for c in classes] + [len(y)],
            "recall": [*point, float(np.mean(point))],
            "low": [*low, float(bta_low)],
            "high": [*high, float(bta_high)],
        }
    )
    return table


def avg_selectivity(
    active: sp.csr_matrix, label_index: np.ndarray, n_labels: int, weights: np.ndarray
) -> np.ndarray:
    """(labels, features) avg selectivity with token ``weights``: tokens of label index -1
    are ignored; a label without weight gets NaN."""
    rows = np.flatnonzero(label_index >= 0)
    onehot = sp.csr_matrix(
        (weights[rows], (label_index[rows], rows)), shape=(n_labels, active.shape[0])
    )
    mass = np.asarray(onehot.sum(axis=1)).ravel()
    return avg_from_counts(np.asarray((onehot @ active).toarray()), mass)
