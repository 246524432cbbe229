"""Selectivity of dictionary features for the labels of a task (Donhauser et al. 2025).

A feature is *active* on a token when its code is non-zero; the selectivity of feature m for
label i is ``avg = P(active | i) - mean_{j != i} P(active | j)`` and
``max = P(active | i) - max_{j != i} P(active | j)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.evaluate.labels import label_series, rare_labels, task_labels

logger = logging.getLogger(__name__)


def as_csr(codes: sp.spmatrix | sp.sparray | np.ndarray, name: str = "codes") -> sp.csr_matrix:
    """Return ``codes`` as a 2-D CSR matrix (dense arrays are converted, sparse kept sparse)."""
    if sp.issparse(codes):
        csr = sp.csr_matrix(codes)
    else:
        arr = np.asarray(codes)
        if arr.ndim != 2:
            raise ValueError(
                f"{name}: expected a 2-D (n_tokens, n_features) array, got {arr.shape}"
            )
        csr = sp.csr_matrix(arr)
    if csr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n_tokens, n_features) matrix, got {csr.shape}")
    return csr


def active_indicator(codes: sp.csr_matrix) -> sp.csr_matrix:
    """0/1 float matrix of non-zero codes; explicitly stored zeros are removed first."""
    active = codes.copy()
    active.eliminate_zeros()
    active.data = np.ones_like(active.data, dtype=np.float64)
    return active


def avg_from_counts(counts: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Avg selectivity (..., C, M) from active counts (..., C, M) and label sizes (..., C),
    counted or weighted: ``P(active | i)`` minus its mean over the other labels present. A
    label without tokens (size 0) is not among the others, and its row is NaN."""
    mass = np.asarray(mass, dtype=np.float64)
    present = mass > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(present[..., None], counts / mass[..., None], np.nan)
    n_present = present.sum(axis=-1)[..., None, None]
    total = np.nansum(p, axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return p - (total - p) / (n_present - 1)


@dataclass
class Selectivity:
    """Per-label activation probabilities and selectivity scores of every feature."""

    labels: np.ndarray  # (C,) label values as str, sorted
    n_per_label: np.ndarray  # (C,) tokens per label
    p_active: np.ndarray  # (C, M) P(active | label)
    avg: np.ndarray  # (C, M) P(a|i) - mean_{j!=i} P(a|j)
    max: np.ndarray  # (C, M) P(a|i) - max_{j!=i} P(a|j)

    @property
    def n_labels(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.p_active.shape[1])


def selectivity(
    codes: sp.spmatrix | sp.sparray | np.ndarray, labels: np.ndarray | pd.Series
) -> Selectivity:
    """Selectivity of every feature for every label, from (n, M) codes and (n,) labels.

    Uses a sparse one-hot (n, C) times the sparse activity matrix (n, M), so no dense (n, M)
    array is ever built. Tokens with a missing label (NaN/None) are ignored; labels are compared
    as strings. At least two distinct labels are required.
    """
    csr = as_csr(codes)
    n, n_features = csr.shape
    lab = label_series(labels, "labels")
    if len(lab) != n:
        raise ValueError(f"labels: expected {n} labels (one per row of codes), got {len(lab)}")
    if n_features == 0:
        raise ValueError("codes: expected at least one feature column, got 0")

    keep = ~lab.isna().to_numpy()
    str_labels = lab[keep].astype(str).to_numpy()
    uniq, inverse = np.unique(str_labels, return_inverse=True)
    if uniq.shape[0] < 2:
        raise ValueError(
            f"labels: selectivity needs at least 2 distinct non-missing labels, got "
            f"{uniq.shape[0]} ({list(uniq)!r}) among {n} tokens ({int((~keep).sum())} missing)"
        )
    n_labels = uniq.shape[0]

    rows = np.flatnonzero(keep)
    onehot = sp.csr_matrix(
        (np.ones(rows.shape[0], dtype=np.float64), (rows, inverse.astype(np.int64))),
        shape=(n, n_labels),
    )
    counts = np.asarray((onehot.T @ active_indicator(csr)).toarray(), dtype=np.float64)
    n_per_label = np.bincount(inverse, minlength=n_labels).astype(np.int64)
    p_active = counts / n_per_label[:, None]
    avg = avg_from_counts(counts, n_per_label)

    # max over j != i: the column maximum, except on the arg-max row where it is the runner-up.
    top_idx = np.argmax(p_active, axis=0)
    top2 = -np.partition(-p_active, 1, axis=0)[:2]
    max_others = np.broadcast_to(top2[0], p_active.shape).copy()
    cols = np.arange(n_features)
    max_others[top_idx, cols] = top2[1]
    max_sel = p_active - max_others

    return Selectivity(
        labels=uniq.astype(str),
        n_per_label=n_per_label,
        p_active=p_active,
        avg=avg,
        max=max_sel,
    )


def selectivity_counts(
    sel: Selectivity, thresholds: Sequence[float] = (0.5, 0.2)
) -> dict[str, int]:
    """Number of features whose avg selectivity exceeds each threshold for at least one label.

    Keys are ``f"n_features_sel_{t:g}"``, e.g. ``"n_features_sel_0.5"``.
    """
    best = sel.avg.max(axis=0)
    return {f"n_features_sel_{t:g}": int(np.count_nonzero(best > t)) for t in thresholds}


def best_selectivity_per_label(sel: Selectivity) -> pd.DataFrame:
    """One row per label: the best avg selectivity over features (and which feature), and the
    best max selectivity over features; sorted by ``best_avg`` descending (ties: label order)."""
    best_feature = np.argmax(sel.avg, axis=1)
    rows = np.arange(sel.n_labels)
    best_avg = sel.avg[rows, best_feature]
    best_max = sel.max.max(axis=1)
    order = np.lexsort((rows, -best_avg))
    return pd.DataFrame(
        {
            "label": sel.labels[order],
            "n_tokens": sel.n_per_label[order],
            "best_avg": best_avg[order],
            "best_feature": best_feature[order].astype(np.int64),
            "best_max": best_max[order],
        }
    )


def task_selectivity_tables(
    codes: sp.csr_matrix,
    obs: pd.DataFrame,
    tasks: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float],
    min_label_size: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per task: features above each avg-selectivity threshold (counts), and the best score
    per label (best). Labels of fewer than ``min_label_size`` tokens are left out, their number
    in the counts' ``n_rare_labels``. The counts row task='any' counts features selective for
    at least one label of any task."""
    counts, best, best_any = [], [], None
    for task in tasks:
        labels = task_labels(obs, task)
        rare = rare_labels(labels, min_label_size)
        labels = labels.where(~labels.isin(list(rare)), np.nan)
        if labels.nunique() < 2:
            raise ValueError(
                f"task {task['name']!r} (column {task['column']!r}): fewer than 2 labels with "
                f"at least {min_label_size} tokens (evaluate.min_label_size); found "
                f"{labels.value_counts().to_dict()}, left out {rare}"
            )
        sel = selectivity(codes, labels)
        row = {"task": task["name"], **selectivity_counts(sel, thresholds)}
        counts.append({**row, "n_rare_labels": len(rare)})
        table = best_selectivity_per_label(sel)
        table.insert(0, "task", task["name"])
        best.append(table)
        feature_best = sel.avg.max(axis=0)
        best_any = feature_best if best_any is None else np.maximum(best_any, feature_best)
    any_row = {f"n_features_sel_{t:g}": int((best_any > t).sum()) for t in thresholds}
    total_rare = sum(c["n_rare_labels"] for c in counts)
    counts.append({"task": "any", **any_row, "n_rare_labels": total_rare})
    return pd.DataFrame(counts), pd.concat(best, ignore_index=True)


def features_above_null_counts(tasks: Sequence[str], above: Mapping[str, np.ndarray]) -> list[int]:
    """Per task of ``tasks`` (a selectivity counts table's ``task`` column), how many features
    are above the permutation null on it (``above``: per task, a boolean per feature); a task
    without its own entry (the 'any' row) counts the features above null on any task."""
    union = np.logical_or.reduce(list(above.values()))
    return [int(above[t].sum()) if t in above else int(union.sum()) for t in tasks]
