"""Labels of an evaluation task: one value per token, missing where a token has no label."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def label_series(labels: np.ndarray | pd.Series | Sequence, name: str) -> pd.Series:
    """Labels as a positional (RangeIndex) Series, whatever the input container."""
    if isinstance(labels, pd.Series):
        return labels.reset_index(drop=True)
    if isinstance(labels, pd.Categorical):
        return pd.Series(labels)
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {arr.shape}")
    return pd.Series(arr)


def task_labels(table: pd.DataFrame, task: Mapping[str, Any], min_size: int = 1) -> pd.Series:
    """A task's labels as strings, with excluded values, missing labels and labels of fewer
    than ``min_size`` tokens (`evaluate.min_label_size`) set to NaN; rare labels are logged.

    A label with a handful of tokens gives selectivities and probe accuracies that mean
    nothing (one token relabelled used to make 4 of 16 features look selective)."""
    if task["column"] not in table.columns:
        raise ValueError(
            f"task {task['name']!r}: column {task['column']!r} is not in obs; "
            f"columns: {list(table.columns)}"
        )
    labels = table[task["column"]].astype("string").astype(object)
    labels[labels.isin([str(v) for v in task.get("exclude", [])])] = np.nan
    labels = labels.where(labels.notna(), np.nan)
    rare = rare_labels(labels, min_size)
    if rare:
        log.info(
            "task %s: %d labels with fewer than %d tokens left out: %s",
            task["name"],
            len(rare),
            min_size,
            ", ".join(f"{k} ({v})" for k, v in rare.items()),
        )
        labels[labels.isin(list(rare))] = np.nan
    return labels


def rare_labels(labels: pd.Series, min_size: int) -> dict[str, int]:
    """Labels with fewer than ``min_size`` tokens, with their counts."""
    counts = labels.dropna().value_counts()
    return {str(k): int(v) for k, v in counts[counts < min_size].sort_index().items()}
