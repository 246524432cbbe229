"""CellProfiler vs dictionary comparison: label alignment and the Pearson interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

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
    """A hand-worked case: n = 28 points built to have r = 0.5 exactly. Fisher's z: artanh(0.5)
    = 0.5493, standard error 1 / sqrt(n - 3) = 0.2, so the 95 % interval is tanh(0.5493 -/+
    1.96 x 0.2) = [0.1560, 0.7358]; t = r sqrt(n - 2) / sqrt(1 - r^2) = 2.944 on 26 degrees of
    freedom, two-sided p = 0.00674. (With n - 2 in the standard error the interval would be
    [0.1634, 0.7323].)"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=28)
    x -= x.mean()
    noise = rng.normal(size=28)
    noise -= noise.mean()
    noise -= (noise @ x) / (x @ x) * x  # orthogonal to x, same norm: r is exactly 0.5
    noise *= np.linalg.norm(x) / np.linalg.norm(noise)
    y = 0.5 * x + np.sqrt(0.75) * noise
    out = cp_comparison.pearson_with_ci(x, y)
    assert out["n_labels"] == 28
    assert out["pearson_r"] == pytest.approx(0.5, abs=1e-12)
    assert out["ci_low"] == pytest.approx(0.15603, abs=5e-5)
    assert out["ci_high"] == pytest.approx(0.73582, abs=5e-5)
    assert out["p"] == pytest.approx(0.006741, abs=5e-6)
    assert np.isnan(cp_comparison.pearson_with_ci(x[:3], y[:3])["pearson_r"])


def test_dictionary_points_count_active_codes():
    codes = sp.csr_matrix(np.array([[1.0, 0, -2.0], [0, 0, 3.0]]))
    per_label = pd.DataFrame({"label": ["A", "B"], "v": [0.5, 0.1]})
    points = cp_comparison.dictionary_sparsity_points({"v": codes}, per_label)
    assert points.mean_active.tolist() == [1.5]
    assert points.mean_best_avg.tolist() == [pytest.approx(0.3)]


def test_compare_with_dictionaries_builds_the_figure_tables():
    """Five labels, two dictionaries: labels by CellProfiler's score, r as np.corrcoef, a
    sparsity point per dictionary (mean non-zeros per row, mean per-label score) after the
    CellProfiler sweep in the curve."""
    cp = {"A": 0.1, "B": 0.5, "C": 0.3, "D": 0.9, "E": 0.7}
    first = {"A": 0.2, "B": 0.4, "C": 0.1, "D": 0.8, "E": 0.6}
    second = {"A": 0.5, "B": 0.1, "C": 0.4, "D": 0.2, "E": 0.3}
    codes = {
        "icfl_pca_k8_seed0": sp.csr_matrix(np.array([[1.0, 0, -1.0], [0, 0, 2.0]])),
        "topk_none_k8_seed0": sp.csr_matrix(np.array([[0.0, 0, 0], [1.0, 1.0, 1.0]])),
    }
    sweep = pd.DataFrame(
        {"method": "CellProfiler", "target": [2, 4], "alpha": [0.01, 0.1]}
        | {"mean_active": [2.5, 4.5], "mean_best_avg": [0.3, 0.4]}
    )
    result = cp_comparison.compare_with_dictionaries(
        best("gene", cp),
        {"icfl_pca_k8_seed0": best("gene", first), "topk_none_k8_seed0": best("gene", second)},
        codes,
        sweep,
        "gene",
    )
    labels = result.per_label
    assert labels.columns.tolist() == [
        "label",
        "CellProfiler",
        "icfl_pca_k8_seed0",
        "topk_none_k8_seed0",
    ]
    assert labels.label.tolist() == ["D", "E", "B", "C", "A"]
    assert labels.icfl_pca_k8_seed0.tolist() == [0.8, 0.6, 0.4, 0.1, 0.2]
    order = ["A", "B", "C", "D", "E"]
    x = np.array([cp[k] for k in order])
    correlations = result.correlations.set_index("variant")
    for name, scores in (("icfl_pca_k8_seed0", first), ("topk_none_k8_seed0", second)):
        y = np.array([scores[k] for k in order])
        assert correlations.loc[name, "pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
        assert correlations.loc[name, "n_labels"] == 5
        assert correlations.loc[name, "mean_best_avg_dictionary"] == pytest.approx(y.mean())
    assert result.points.method.tolist() == list(codes)
    assert result.points.mean_active.tolist() == [1.5, 1.5]
    assert result.points.mean_best_avg.tolist() == [pytest.approx(0.42), pytest.approx(0.3)]
    assert result.curve.columns.tolist() == ["method", "mean_active", "mean_best_avg"]
    assert result.curve.method.tolist() == ["CellProfiler", "CellProfiler", *codes]
    assert result.curve.mean_active.tolist() == [2.5, 4.5, 1.5, 1.5]
