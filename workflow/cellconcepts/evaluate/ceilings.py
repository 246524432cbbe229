"""Ceilings for selectivity: the best avg selectivity a feature could reach for each label,
so that a dictionary's score can be read as a fraction of what was reachable.

- **Oracle** (ground truth only): a feature active exactly on the tokens that truly carry
  their label (a simulator knows, e.g. crops holding a perturbed cell); its selectivity for
  label i is ``P(carrier | i)`` minus the mean over the other labels of 0.
- **Probe**: where no ground truth exists, a linear probe's one-vs-rest score for label i,
  out of fold, turned into a sparse feature active on the ``n_i`` highest-scoring tokens
  (``n_i`` = the label's token count, the activation frequency of a perfect feature). It is
  what one direction of the representation reaches, not a strict bound: a dictionary feature
  may exceed it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.evaluate.labels import label_series, task_labels
from cellconcepts.evaluate.probing import ProbeSettings, fit_probe, subsample_positions
from cellconcepts.evaluate.selectivity import selectivity
from cellconcepts.evaluate.uncertainty import recall_intervals

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


def out_of_fold_scores(
    features,
    labels: pd.Series,
    *,
    groups: pd.Series | None,
    probe: ProbeSettings,
    folds: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decision scores of the linear probe for every labelled token, each from a probe that
    never saw it (folds of whole groups where ``groups`` is given, else stratified folds).

    Returns the labelled rows, the classes (sorted) and their (rows, classes) scores; a class
    absent from a fold's training rows scores -inf there.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    lab = label_series(labels, "labels")
    rows = np.flatnonzero(lab.notna().to_numpy())
    y = lab.iloc[rows].astype(str).to_numpy()
    classes = np.unique(y)
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
    for train, test in splits:
        if np.unique(y[train]).shape[0] < 2:
            continue
        if probe.max_train is not None and len(train) > probe.max_train:
            train = train[subsample_positions(y[train], probe.max_train, probe.seed)]
        score, seen = fit_probe(
            x[train], y[train], max_iter=probe.max_iter, C=probe.C, seed=probe.seed
        )
        scores[np.ix_(test, np.searchsorted(classes, seen))] = score(x[test])
    return rows, classes, scores


def scored_recalls(
    labels: pd.Series,
    rows: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    units: np.ndarray,
    **bootstrap: Any,
) -> pd.DataFrame:
    """Recall per class of the out-of-fold predictions (the best-scoring class), with
    bootstrap intervals over ``units`` (`uncertainty.recall_intervals`)."""
    y = labels.iloc[rows].astype(str).to_numpy()
    pred = classes[np.argmax(scores, axis=1)]
    return recall_intervals(y, pred, units[rows], **bootstrap)


def probe_selectivity(labels: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> pd.Series:
    """Per class: the avg selectivity of the feature active on the ``n_i`` tokens whose
    score for class i is highest (``n_i`` = the class's token count)."""
    active = np.zeros(scores.shape, dtype=bool)
    for i, c in enumerate(classes):
        n_i = int(np.count_nonzero(labels == c))
        active[np.argsort(-scores[:, i], kind="stable")[:n_i], i] = True
    return own_label_selectivity(active, pd.Series(labels))


def task_ceilings(
    features,
    table: pd.DataFrame,
    task: Mapping[str, Any],
    *,
    probe: ProbeSettings,
    units: np.ndarray,
    min_label_size: int = 1,
    folds: int = 5,
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per label of ``task``: the oracle ceiling (if the task names an ``oracle``
    column), the probe ceiling, the out-of-fold probe's recall with a bootstrap interval over
    ``units``, and ``ceiling`` (the oracle where there is one, else the probe)."""
    labels = task_labels(table, task, min_label_size)
    groups = table[task["group_by"]] if task.get("group_by") else None
    rows, classes, scores = out_of_fold_scores(
        features, labels, groups=groups, probe=probe, folds=folds
    )
    y = labels.iloc[rows].astype(str).to_numpy()
    recall = scored_recalls(
        labels, rows, classes, scores, units, replicates=replicates, seed=seed, level=level
    ).set_index("label")
    out = pd.DataFrame({"label": classes})
    out.insert(0, "task", task["name"])
    out["n_tokens"] = recall.loc[classes, "n_tokens"].to_numpy()
    out["probe_ceiling"] = probe_selectivity(y, classes, scores).loc[classes].to_numpy()
    out["probe_recall"] = recall.loc[classes, "recall"].to_numpy()
    out["probe_recall_low"] = recall.loc[classes, "low"].to_numpy()
    out["probe_recall_high"] = recall.loc[classes, "high"].to_numpy()
    out["chance"] = 1.0 / len(classes)
    if task.get("oracle"):
        oracle = oracle_selectivity(labels, carriers(table, task["oracle"]))
        out["oracle_ceiling"] = oracle.loc[classes].to_numpy()
        out["ceiling"] = out["oracle_ceiling"]
        out["ceiling_kind"] = "oracle"
    else:
        out["oracle_ceiling"] = np.nan
        out["ceiling"] = out["probe_ceiling"]
        out["ceiling_kind"] = "probe"
    bta = recall.loc["BTA"]
    log.info(
        "task %s: out-of-fold probe BTA %.3f [%.3f, %.3f]; median ceiling %.3f (%s)",
        task["name"],
        bta["recall"],
        bta["low"],
        bta["high"],
        float(out["ceiling"].median()),
        out["ceiling_kind"].iloc[0],
    )
    return out


def fraction_reached(
    best: pd.DataFrame, ceilings: pd.DataFrame, *, min_ceiling: float = 0.1
) -> pd.DataFrame:
    """``best`` (task, label, best_avg, ...) with each label's ceiling and ``reached`` =
    best_avg / ceiling; labels whose ceiling is below ``min_ceiling`` (nothing to find, e.g.
    controls under an oracle) get NaN."""
    merged = best.merge(
        ceilings[["task", "label", "ceiling", "ceiling_kind"]].astype({"label": str}),
        on=["task", "label"],
        how="left",
    )
    reachable = merged["ceiling"] >= min_ceiling
    merged["reached"] = np.where(reachable, merged["best_avg"] / merged["ceiling"], np.nan)
    return merged


def mean_reached(table: pd.DataFrame, tasks: Sequence[str]) -> dict[str, float]:
    """Per task: the mean fraction of reachable selectivity over its reachable labels."""
    return {
        f"sel_reached_{t}": float(table.loc[table["task"] == t, "reached"].mean()) for t in tasks
    }
