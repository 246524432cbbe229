"""CellProfiler vs dictionary comparison: label alignment and the Pearson interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from cellconcepts.cellprofiler import comparison as cp_comparison


def best(task: str, scores: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"task": task, "label": list(scores), "best_avg": list(scores.values())}
    ).sample(frac=1, random_state=0)


def test_per_label_table_aligns_labels_and_sorts_by_cellprofiler():
    table = cp_comparison.per_label_table(
        {
            "CellProfiler": best("gene", {"A": 0.2, "B": 0.9, "C": 0.5}),
            "icfl_pca_k8_seed0": best("gene", {"C": 0.4, "A": 0.1, "B": 0.3}),
        },
        "gene",
    )
    assert table.label.tolist() == ["B", "C", "A"]
    assert table.icfl_pca_k8_seed0.tolist() == [0.3, 0.4, 0.1]


def test_missing_task_is_named():
    with pytest.raises(ValueError, match="no rows for task 'gene'"):
        cp_comparison.per_label_table({"CellProfiler": best("cell_type", {"A": 1.0})}, "gene")


def test_pearson_interval_is_fisher_z():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = 0.6 * x + rng.normal(size=30)
    out = cp_comparison.pearson_with_ci(x, y)
    r = np.corrcoef(x, y)[0, 1]
    z, half = np.arctanh(r), stats.norm.ppf(0.975) / np.sqrt(30 - 3)
    assert out["pearson_r"] == pytest.approx(r)
    assert out["ci_low"] == pytest.approx(np.tanh(z - half))
    assert out["ci_high"] == pytest.approx(np.tanh(z + half))
    assert np.isnan(cp_comparison.pearson_with_ci(x[:3], y[:3])["pearson_r"])


def test_dictionary_points_count_active_codes():
    codes = sp.csr_matrix(np.array([[1.0, 0, -2.0], [0, 0, 3.0]]))
    per_label = pd.DataFrame({"label": ["A", "B"], "v": [0.5, 0.1]})
    points = cp_comparison.dictionary_sparsity_points({"v": codes}, per_label)
    assert points.mean_active.tolist() == [1.5]
    assert points.mean_best_avg.tolist() == [pytest.approx(0.3)]
