"""What a label's best feature can be read against: references, never bounds.

- **Oracle selectivity** (simulated data only): the avg selectivity of a feature active
  exactly on the tokens that truly carry their label (e.g. crops holding a perturbed cell).
  It is ground truth about the labels, not a bound: a feature active on every token of a
  label scores higher, since avg selectivity rewards coverage.
- **Linear reference**: the best that one linear direction of the representation does with
  the same metric and the same held-out discipline as the dictionaries. A class-balanced
  logistic probe is fitted out of fold (folds of whole ``group_by`` groups); for each label
  its score is thresholded where the avg selectivity of the *training* folds is highest, and
  the threshold is applied to the held-out fold. The avg selectivity of those held-out
  activations, over every labelled token, is the reference, with a bootstrap interval over
  units. A dictionary feature may beat it (the probe is fitted for classification).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.evaluate.labels import label_series, task_labels
from cellconcepts.evaluate.probing import ProbeSettings, fit_probe, subsample_positions
from cellconcepts.evaluate.selectivity import selectivity
from cellconcepts.evaluate.uncertainty import (
    avg_selectivity,
    interval,
    recall_intervals,
    unit_weights,
)

log = logging.getLogger(__name__)


def carriers(table: pd.DataFrame, column: str) -> np.ndarray:
    """Boolean per row: does the token truly carry its label (``column`` > 0, or true)?"""
    if column not in table.columns:
        raise ValueError(f"oracle column {column!r} is not in obs; columns: {list(table.columns)}")
    values = table[column]
    if values.dtype == bool:
        return values.to_numpy()
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any():
        bad = values[numeric.isna()].iloc[0]
        raise ValueError(
            f"oracle column {column!r}: expected numbers or booleans (> 0 / true = carries "
            f"its label), got {bad!r} in row {int(np.flatnonzero(numeric.isna())[0])}"
        )
    return numeric.to_numpy() > 0


def own_label_selectivity(active: np.ndarray, labels: pd.Series) -> pd.Series:
    """Avg selectivity of one feature per label, where column i of the boolean (n, C)
    ``active`` is the feature meant for the i-th label in sorted order."""
    sel = selectivity(sp.csr_matrix(active.astype(np.float64)), labels)
    return pd.Series(np.diag(sel.avg), index=sel.labels)


def oracle_selectivity(labels: pd.Series, carries: np.ndarray) -> pd.Series:
    """Per label: the avg selectivity of the feature active exactly on its carriers."""
    lab = label_series(labels, "labels")
    classes = np.unique(lab.dropna().astype(str))
    values = lab.astype(object).where(lab.notna(), None).to_numpy()
    active = np.column_stack([(values == c) & carries for c in classes])
    return own_label_selectivity(active, lab)


@dataclass
class OutOfFold:
    """An out-of-fold probe's results over the labelled rows: the decision scores (each row
    scored by a probe that never saw it; -inf for a class absent from that probe's training
    rows) and, per class, the activation of the row's held-out fold (score at or above the
    threshold chosen on the training folds)."""

    rows: np.ndarray  # positions of the labelled rows
    classes: np.ndarray  # (C,) sorted
    scores: np.ndarray  # (rows, C)
    active: np.ndarray  # (rows, C) bool


def best_threshold(scores: np.ndarray, label_index: np.ndarray, label: int) -> float:
    """A score threshold at which ``score >= threshold`` has the highest avg selectivity for
    ``label`` among the rows' labels (``label_index``, codes 0..C-1): halfway between the
    lowest score kept and the next; +inf when no cut beats keeping nothing (or the label is
    absent), -inf when keeping everything is best."""
    n_i = np.bincount(label_index, minlength=label + 1).astype(np.float64)
    present = np.flatnonzero(n_i > 0)
    if label not in present or present.size < 2:
        return np.inf
    order = np.argsort(-scores, kind="stable")
    values = scores[order]
    own = label_index[order] == label
    other = -1.0 / ((present.size - 1) * np.maximum(n_i[label_index[order]], 1.0))
    step = np.where(own, 1.0 / n_i[label], other)
    gain = np.cumsum(step)
    # a cut may fall only after the last of a run of equal scores
    cut = np.ones(values.shape[0], dtype=bool)
    cut[:-1] = values[1:] != values[:-1]
    cut &= np.isfinite(values)
    if not cut.any():
        return np.inf
    best = np.flatnonzero(cut)[np.argmax(gain[cut])]
    if gain[best] <= 0:
        return np.inf
    # halfway to the next lower score, so that held-out scores near the cut fall either side
    following = values[best + 1] if best + 1 < values.shape[0] else -np.inf
    return float((values[best] + following) / 2) if np.isfinite(following) else -np.inf


def out_of_fold(
    features,
    labels: pd.Series,
    *,
    groups: pd.Series | None,
    probe: ProbeSettings,
    folds: int = 5,
) -> OutOfFold:
    """The out-of-fold probe (folds of whole groups where ``groups`` is given, else
    stratified folds): its decision scores, and each class's activation thresholded on the
    training folds and applied to the held-out fold."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    lab = label_series(labels, "labels")
    rows = np.flatnonzero(lab.notna().to_numpy())
    y = lab.iloc[rows].astype(str).to_numpy()
    classes, y_index = np.unique(y, return_inverse=True)
    x = np.asarray(features[rows]) if not sp.issparse(features) else features[rows]
    if groups is not None:
        g = label_series(groups, "groups").iloc[rows].astype(str).to_numpy()
        n_groups = np.unique(g).shape[0]
        if n_groups < 2:
            raise ValueError("out-of-fold probe: need at least 2 groups, got 1")
        splits = GroupKFold(n_splits=min(folds, n_groups)).split(x, y, g)
    elif np.unique(y, return_counts=True)[1].min() >= folds:
        splits = StratifiedKFold(folds, shuffle=True, random_state=probe.seed).split(x, y)
    else:
        splits = KFold(folds, shuffle=True, random_state=probe.seed).split(x)
    scores = np.full((len(rows), len(classes)), -np.inf)
    active = np.zeros((len(rows), len(classes)), dtype=bool)
    for train, test in splits:
        if np.unique(y[train]).shape[0] < 2:
            continue
        fitted = train
        if probe.max_train is not None and len(train) > probe.max_train:
            fitted = train[subsample_positions(y[train], probe.max_train, probe.seed)]
        score, seen = fit_probe(
            x[fitted], y[fitted], max_iter=probe.max_iter, C=probe.C, seed=probe.seed
        )
        columns = np.searchsorted(classes, seen)
        train_scores = score(x[train])
        test_scores = score(x[test])
        scores[np.ix_(test, columns)] = test_scores
        for j, c in enumerate(columns):
            threshold = best_threshold(train_scores[:, j], y_index[train], int(c))
            active[test, c] = test_scores[:, j] >= threshold
    return OutOfFold(rows, classes, scores, active)


def scored_recalls(
    labels: pd.Series, found: OutOfFold, units: np.ndarray, **bootstrap: Any
) -> pd.DataFrame:
    """Recall per class of the out-of-fold predictions (the best-scoring class), with
    bootstrap intervals over ``units`` (`uncertainty.recall_intervals`)."""
    y = labels.iloc[found.rows].astype(str).to_numpy()
    pred = found.classes[np.argmax(found.scores, axis=1)]
    return recall_intervals(y, pred, units[found.rows], **bootstrap)


def linear_reference(
    labels: pd.Series,
    found: OutOfFold,
    units: np.ndarray,
    *,
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per class: the avg selectivity of the out-of-fold activations for that class (own
    label), its activation frequency, and its bootstrap interval over ``units``."""
    y = labels.iloc[found.rows].astype(str).to_numpy()
    classes, index = np.unique(y, return_inverse=True)
    active = sp.csr_matrix(found.active.astype(np.float64))
    own = np.arange(len(classes))
    point = avg_selectivity(active, index, len(classes), np.ones(len(y)))[own, own]
    samples = np.stack(
        [
            avg_selectivity(active, index, len(classes), w)[own, own]
            for w in unit_weights(units[found.rows], replicates, seed)
        ]
    )
    low, high = interval(samples, level)
    return pd.DataFrame(
        {
            "label": classes,
            "linear_reference": point,
            "linear_reference_low": low,
            "linear_reference_high": high,
            "linear_reference_frequency": found.active.mean(axis=0),
        }
    )


def fold_groups(
    table: pd.DataFrame, task: Mapping[str, Any], split_units: np.ndarray | None
) -> pd.Series | None:
    """What out-of-fold folds keep apart: the task's ``group_by`` column, else the dataset's
    units (``resample_unit``) where it has them, else nothing (stratified folds)."""
    if task.get("group_by"):
        return table[task["group_by"]]
    return None if split_units is None else pd.Series(split_units, index=table.index)


def task_references(
    features,
    table: pd.DataFrame,
    task: Mapping[str, Any],
    *,
    probe: ProbeSettings,
    units: np.ndarray,
    split_units: np.ndarray | None = None,
    min_label_size: int = 1,
    folds: int = 5,
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per label of ``task``: the linear reference with its interval, the
    out-of-fold probe's recall with its interval, chance, and the oracle selectivity where
    the task names an ``oracle`` column (else NaN). Folds keep whole ``group_by`` groups
    apart, else whole ``split_units`` where given (`fold_groups`)."""
    labels = task_labels(table, task, min_label_size)
    groups = fold_groups(table, task, split_units)
    found = out_of_fold(features, labels, groups=groups, probe=probe, folds=folds)
    bootstrap = {"replicates": replicates, "seed": seed, "level": level}
    recall = scored_recalls(labels, found, units, **bootstrap).set_index("label")
    reference = linear_reference(labels, found, units, **bootstrap).set_index("label")
    classes = found.classes
    out = pd.DataFrame({"label": classes})
    out.insert(0, "task", task["name"])
    out["n_tokens"] = recall.loc[classes, "n_tokens"].to_numpy()
    for column in reference.columns:
        out[column] = reference.loc[classes, column].to_numpy()
    out["probe_recall"] = recall.loc[classes, "recall"].to_numpy()
    out["probe_recall_low"] = recall.loc[classes, "low"].to_numpy()
    out["probe_recall_high"] = recall.loc[classes, "high"].to_numpy()
    out["chance"] = 1.0 / len(classes)
    if task.get("oracle"):
        oracle = oracle_selectivity(labels, carriers(table, task["oracle"]))
        out["oracle_selectivity"] = oracle.loc[classes].to_numpy()
    else:
        out["oracle_selectivity"] = np.nan
    bta = recall.loc["BTA"]
    log.info(
        "task %s: out-of-fold probe BTA %.3f [%.3f, %.3f]; median linear reference %.3f",
        task["name"],
        bta["recall"],
        bta["low"],
        bta["high"],
        float(out["linear_reference"].median()),
    )
    return out


def reference_summary(
    scores: pd.DataFrame, references: pd.DataFrame, tasks: Sequence[str]
) -> dict[str, float]:
    """Per-task summaries of one model's held-out best features (`label_scores`, score
    ``heldout_avg``) over the task's labels that could be scored (a training token to choose
    on, a test token to score on): ``heldout_avg_<task>``, their mean avg selectivity;
    ``labels_above_null_<task>``, the fraction whose held-out best feature is above its null
    (FDR); ``labels_reaching_reference_<task>``, the fraction of
    those whose held-out score is at least the low end of the linear reference's interval
    (NaN when no label is above null). The last two are fractions of labels, in [0, 1]
    whatever the scores."""
    heldout = scores[(scores["score"] == "heldout_avg") & scores["p_value"].notna()]
    limits = references.set_index(["task", references["label"].astype(str)])
    out: dict[str, float] = {}
    for task in tasks:
        rows = heldout[heldout["task"] == task]
        above = rows[rows["above_null"].astype(bool)]
        low = limits.reindex(list(zip(above["task"], above["label"].astype(str), strict=True)))
        reaching = above["value"].to_numpy() >= low["linear_reference_low"].to_numpy()
        out[f"heldout_avg_{task}"] = float(rows["value"].mean())
        out[f"labels_above_null_{task}"] = float(above.shape[0] / max(rows.shape[0], 1))
        out[f"labels_reaching_reference_{task}"] = (
            float(reaching.mean()) if above.shape[0] else float("nan")
        )
    return out


def references_table(
    features,
    table: pd.DataFrame,
    tasks: Sequence[Mapping[str, Any]],
    *,
    probe: ProbeSettings,
    units: np.ndarray,
    split_units: np.ndarray | None = None,
    min_label_size: int = 1,
    folds: int = 5,
    bootstrap: Mapping[str, Any],
) -> pd.DataFrame:
    """`task_references` of every task of ``tasks``, one table (``bootstrap``: replicates,
    seed, level)."""
    return pd.concat(
        [
            task_references(
                features,
                table,
                task,
                probe=probe,
                units=units,
                split_units=split_units,
                min_label_size=min_label_size,
                folds=folds,
                **bootstrap,
            )
            for task in tasks
        ],
        ignore_index=True,
    )
