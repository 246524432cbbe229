"""Is a dataset fit to be learned from? Checked once, right after its token store is written
and before any whitening, training or probing, so that bad input fails early and never gives a
silently wrong result.

Errors (raised, naming the file, column, task or row): tokens that are not finite or that are
all one vector, token ids that repeat, an `is_control` or `split` column that does not parse, a
split without train or test rows, fewer than 2 controls, a task whose column is missing or that
has fewer than 2 labels of at least `evaluate.min_label_size` tokens, a `group_by` column that
is missing or has a single value among the labelled rows or a probe split that cannot test any
label (labels confounded with the groups), an `oracle` column that is missing or not
numeric/boolean, `enrich.labels` that are not labels of the enrichment's task. Warnings
(returned and logged): fewer controls than dimensions (the whitening's covariance is then
rank-deficient), labels left out as too rare.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cellconcepts.evaluate.labels import rare_labels, task_labels
from cellconcepts.evaluate.probing import ProbeSettings, task_split
from cellconcepts.evaluate.uncertainty import split_units
from cellconcepts.store.obs import check_split_values, parse_flags
from cellconcepts.store.tokens import TokenStore

log = logging.getLogger(__name__)

# Rows per chunk of the finiteness scan, so a store larger than memory is read once, streamed.
_CHUNK_ROWS = 65536


def check_values(store: TokenStore) -> None:
    """Every token value finite, the first bad row named with its token id; and not every
    token the same vector (a broken export), from which nothing can be learned. Streamed."""
    tokens = store.tokens
    low = np.full(store.dim, np.inf, dtype=np.float32)
    high = np.full(store.dim, -np.inf, dtype=np.float32)
    for start in range(0, len(tokens), _CHUNK_ROWS):
        chunk = np.asarray(tokens[start : start + _CHUNK_ROWS], dtype=np.float32)
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise ValueError(
                f"{store.files.tokens}: row {row} (token_id "
                f"{store.obs['token_id'].iloc[row]!r}) holds NaN or inf"
            )
        np.minimum(low, chunk.min(axis=0), out=low)
        np.maximum(high, chunk.max(axis=0), out=high)
    if len(tokens) > 1 and (low == high).all():
        raise ValueError(
            f"{store.files.tokens}: all {len(tokens)} tokens are identical (no variance in any "
            "of its dimensions): nothing can be learned from them; check the export of the "
            "embedding"
        )


def check_annotations(store: TokenStore) -> dict[str, int]:
    """Unique ids, boolean controls (at least 2), train and test rows; returns the counts."""
    obs, where = store.obs, str(store.files.obs)
    repeated = obs["token_id"].astype(str).duplicated(keep=False)
    if repeated.any():
        raise ValueError(
            f"{where}: column 'token_id' must be unique; repeated, e.g. "
            f"{obs['token_id'][repeated].unique()[:5].tolist()}"
        )
    controls = parse_flags(obs["is_control"], f"{where}: column 'is_control'")
    check_split_values(obs["split"], f"{where}: column 'split'")
    n_train = int((obs["split"] == "train").sum())
    n_test = len(obs) - n_train
    if n_train == 0 or n_test == 0:
        raise ValueError(
            f"{where}: {n_train} train and {n_test} test rows; both are needed (the dictionary "
            "trains on 'train', reconstruction is measured on 'test')"
        )
    if controls.sum() < 2:
        raise ValueError(
            f"{where}: {int(controls.sum())} control rows (is_control); the whitening is "
            "fitted on the controls and needs at least 2 (check the dataset's `control` key)"
        )
    return {
        "n_tokens": len(obs),
        "n_controls": int(controls.sum()),
        "n_train": n_train,
        "n_test": n_test,
    }


def check_task(
    obs: pd.DataFrame,
    task: Mapping[str, Any],
    min_label_size: int,
    where: str,
    probe: ProbeSettings,
    units: np.ndarray | None = None,
) -> dict[str, Any]:
    """A task's labels: enough labels of enough tokens, groups that can be kept apart, and a
    probe split (the one the probes and held-out scores will use: whole ``units`` for a task
    without ``group_by``) that tests some labels."""
    name, column = task["name"], task["column"]
    if column not in obs.columns:
        raise ValueError(
            f"{where}: task {name!r} reads column {column!r}, which is not there; "
            f"columns: {list(obs.columns)}"
        )
    labels = task_labels(obs, task)
    counts = labels.value_counts()
    rare = rare_labels(labels, min_label_size)
    kept = counts[counts >= min_label_size]
    if len(kept) < 2:
        raise ValueError(
            f"{where}: task {name!r} (column {column!r}) has {len(kept)} label(s) with at least "
            f"{min_label_size} tokens (evaluate.min_label_size); selectivity and probes need 2. "
            f"Labels found: {counts.head(10).to_dict() or 'none (all missing or excluded)'}"
        )
    group = task.get("group_by")
    if group is not None:
        if group not in obs.columns:
            raise ValueError(
                f"{where}: task {name!r} keeps groups of column {group!r} apart "
                f"(tasks[].group_by), which is not there; columns: {list(obs.columns)}"
            )
        labelled = labels.isin(kept.index)
        groups = obs.loc[labelled.to_numpy(), group].nunique(dropna=False)
        if groups < 2:
            raise ValueError(
                f"{where}: task {name!r} keeps groups of column {group!r} apart, but its "
                f"labelled rows have {groups} value(s) there; a grouped split needs 2"
            )
    if task.get("oracle"):
        from cellconcepts.evaluate.references import carriers

        try:
            carriers(obs, task["oracle"])
        except ValueError as err:
            raise ValueError(f"{where}: task {name!r} (tasks[].oracle): {err}") from err
    try:
        task_split(obs, task, probe, min_label_size, units)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    return {
        "task": name,
        "labels": int(len(kept)),
        "rare_labels": rare,
        "smallest_label": int(kept.min()),
    }


def check_enrichment_labels(
    obs: pd.DataFrame, task: Mapping[str, Any], labels: Sequence[str], min_label_size: int
) -> None:
    """``enrich.labels`` (the labels whose best features the enrichment tables show) are
    labels of the enrichment's task that are not left out as rare."""
    known = set(task_labels(obs, task, min_label_size).dropna())
    missing = sorted(set(map(str, labels)) - known)
    if missing:
        raise ValueError(
            f"enrich.labels: {missing} are not labels of task {task['name']!r} (column "
            f"{task['column']!r}, labels of at least {min_label_size} tokens): "
            f"{sorted(known)[:20]}"
        )


def validate_dataset(
    store: TokenStore,
    tasks: Sequence[Mapping[str, Any]],
    min_label_size: int,
    probe: ProbeSettings | None = None,
    resample_unit: Sequence[str] = (),
) -> tuple[dict[str, Any], list[str]]:
    """Every check of the module docstring but the enrichment's (``probe``: the probes'
    split settings, default `ProbeSettings()`); returns (a report, warnings)."""
    where = str(store.files.obs)
    probe = probe or ProbeSettings()
    check_values(store)
    report: dict[str, Any] = {"dim": store.dim, **check_annotations(store)}
    units = split_units(store.obs, list(resample_unit))
    report["tasks"] = [
        check_task(store.obs, task, min_label_size, where, probe, units) for task in tasks
    ]
    warnings = []
    if report["n_controls"] <= store.dim:
        warnings.append(
            f"{where}: {report['n_controls']} control rows for {store.dim}-dimensional tokens: "
            "the PCA whitening's control covariance is rank-deficient (directions the controls "
            "do not span are left unwhitened); more controls, or whitening.n_components below "
            "the number of controls, make it well-posed"
        )
    for task in report["tasks"]:
        if task["rare_labels"]:
            warnings.append(
                f"{where}: task {task['task']!r}: labels with fewer than {min_label_size} tokens "
                f"are left out of selectivity and probing: {task['rare_labels']}"
            )
    return report, warnings
