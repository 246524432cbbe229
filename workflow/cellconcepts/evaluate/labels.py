"""Labels of an evaluation task: one value per token, missing where a token has no label."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


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


def task_labels(table: pd.DataFrame, task: Mapping[str, Any]) -> pd.Series:
    """A task's labels as strings, with excluded values and missing labels set to NaN."""
    labels = table[task["column"]].astype("string").astype(object)
    labels[labels.isin([str(v) for v in task.get("exclude", [])])] = np.nan
    return labels.where(labels.notna(), np.nan)
