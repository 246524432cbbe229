"""Paper Fig. 3: where a label's most selective feature points, seen from the tokens. For each
label, the cosine between every token (in the model's input space, less the model's offset
``b_pre``) and the decoder direction of that label's best feature, split into the label's own
tokens and the tokens of every other label of the task."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

# Histogram bins over the whole cosine range, 0.025 wide.
COSINE_BINS = np.linspace(-1.0, 1.0, 81)


def token_feature_cosines(
    blocks: Iterator[np.ndarray], offset: np.ndarray, directions: np.ndarray
) -> np.ndarray:
    """(n, F) cosines between the tokens (given in row blocks, model space) less ``offset``
    (d,) and the unit columns of ``directions`` (d, F); a token equal to the offset gives 0."""
    unit = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    parts = []
    for block in blocks:
        centred = np.asarray(block, dtype=np.float64) - offset
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        parts.append((centred / np.where(norms > 0, norms, 1.0)) @ unit)
    return np.concatenate(parts) if parts else np.zeros((0, unit.shape[1]))


def own_vs_other(
    cosines: np.ndarray, labels: pd.Series, pairs: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (label, feature) pair of ``pairs`` (columns ``label``, ``feature``; column i of
    ``cosines`` belongs to row i): the own label's tokens against the other labelled tokens
    (tokens whose label is NaN are left out).

    Returns a summary (n_own, n_other, mean cosines, their difference, and the AUC with which
    the cosine tells own from other tokens: 0.5 is chance) and histogram counts over
    `COSINE_BINS` (label, group own/other, bin_left, bin_right, count).
    """
    labelled = labels.notna().to_numpy()
    values = labels.astype(object).to_numpy()
    summary, histograms = [], []
    for i, pair in enumerate(pairs.itertuples(index=False)):
        own = labelled & (values == pair.label)
        other = labelled & ~own
        cos = cosines[:, i]
        both = own | other
        auc = roc_auc_score(own[both], cos[both]) if own.any() and other.any() else np.nan
        summary.append(
            {
                "label": pair.label,
                "feature": int(pair.feature),
                "n_own": int(own.sum()),
                "n_other": int(other.sum()),
                "mean_cosine_own": float(cos[own].mean()) if own.any() else np.nan,
                "mean_cosine_other": float(cos[other].mean()) if other.any() else np.nan,
                "auc_own_vs_other": float(auc),
            }
        )
        for group, mask in (("own", own), ("other", other)):
            counts, _ = np.histogram(cos[mask], bins=COSINE_BINS)
            histograms.append(
                pd.DataFrame(
                    {
                        "label": pair.label,
                        "group": group,
                        "bin_left": COSINE_BINS[:-1],
                        "bin_right": COSINE_BINS[1:],
                        "count": counts,
                    }
                )
            )
    table = pd.DataFrame(summary)
    table["mean_difference"] = table["mean_cosine_own"] - table["mean_cosine_other"]
    return table, pd.concat(histograms, ignore_index=True)


def most_selective_labels(
    best: pd.DataFrame, task: str, n_labels: int, where: str = "best selectivity"
) -> pd.DataFrame:
    """The ``n_labels`` labels of ``task`` whose best feature is most selective (a
    `best_selectivity_per_label` table of every task; ``where`` names it in errors), most
    selective first, the feature as column ``feature``."""
    best = best[best["task"] == task].sort_values("best_avg", ascending=False)
    pairs = best.head(n_labels).rename(columns={"best_feature": "feature"})
    if pairs.empty:
        raise ValueError(f"{where}: no labels of task {task!r} to plot")
    return pairs


def cosine_tables(
    cosines: np.ndarray, labels: pd.Series, pairs: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`own_vs_other` of the ``pairs`` of `most_selective_labels`, the summary with each
    label's best avg selectivity as its third column."""
    summary, counts = own_vs_other(cosines, labels, pairs[["label", "feature"]])
    summary.insert(2, "best_avg_selectivity", pairs["best_avg"].to_numpy())
    return summary, counts


def summary_lines(summary: pd.DataFrame) -> list[str]:
    """One sentence per label of a `cosine_tables` summary: its mean cosines and AUC."""
    return [
        f"{row.label} (feature {row.feature:d}): mean cosine own {row.mean_cosine_own:.3f} "
        f"vs other {row.mean_cosine_other:.3f}, AUC {row.auc_own_vs_other:.3f}"
        for row in summary.itertuples(index=False)
    ]
