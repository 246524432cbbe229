"""Is a dataset fit to be learned from? Checked once, right after its token store is written
and before any whitening, training or probing, so that bad input fails early and never gives a
silently wrong result.

Errors (raised, naming the user's input file, the column, task or row, and the token store):
tokens that are not finite or that are all one vector, token ids that repeat, an `is_control`
or `split` column that does not parse, a split without train or test rows, fewer than 2
controls, a task whose column is missing, whose `exclude` names a value that is not one of its
labels, or that has fewer than 2 labels of at least `evaluate.min_label_size` tokens, a
`group_by` column that is missing or has a single value among the labelled rows or a probe
split that cannot test any label (labels confounded with the groups), an `oracle` column that
is missing or not numeric/boolean, `enrich.labels` that are not labels of the enrichment's
task, a sparsity above the tokens' dimension, PCA whitening fitted on fewer controls than
dimensions (unless `whitening.allow_dropped_dimensions` accepts it). Warnings (returned and
logged): labels that differ only in surrounding whitespace, labels left out as too rare, PCA
whitening that drops dimensions because it is accepted.
"""

from __future__ import annotations

import difflib
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


def check_values(store: TokenStore, source: str | None = None) -> None:
    """Every token value finite, the first bad row named with its token id; and not every
    token the same vector (a broken export), from which nothing can be learned. Streamed.
    ``source``: the user's input the store was made from, named first in the messages."""
    tokens = store.tokens
    where = f"{source} (token store {store.files.tokens})" if source else str(store.files.tokens)
    low = np.full(store.dim, np.inf, dtype=np.float32)
    high = np.full(store.dim, -np.inf, dtype=np.float32)
    for start in range(0, len(tokens), _CHUNK_ROWS):
        chunk = np.asarray(tokens[start : start + _CHUNK_ROWS], dtype=np.float32)
        finite = np.isfinite(chunk)
        if not finite.all():
            row, column = (int(i) for i in np.argwhere(~finite)[0])
            raise ValueError(
                f"{where}: row {start + row} (token_id "
                f"{store.obs['token_id'].iloc[start + row]!r}), embedding dimension {column} "
                "holds NaN or inf"
            )
        np.minimum(low, chunk.min(axis=0), out=low)
        np.maximum(high, chunk.max(axis=0), out=high)
    if len(tokens) > 1 and (low == high).all():
        raise ValueError(
            f"{where}: all {len(tokens)} tokens are identical (no variance in any of its "
            "dimensions): nothing can be learned from them; check the export of the embedding"
        )


def check_annotations(store: TokenStore, where: str | None = None) -> dict[str, int]:
    """Unique ids, boolean controls (at least 2), train and test rows; returns the counts.
    ``where`` names the input in messages (default: the store's obs table)."""
    obs, where = store.obs, where or str(store.files.obs)
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
    check_exclude(obs, task, where)
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


def check_exclude(obs: pd.DataFrame, task: Mapping[str, Any], where: str) -> None:
    """Each value of a task's ``exclude`` is one of its column's labels: a typo would exclude
    nothing, silently. The nearest label is named."""
    present = obs[task["column"]].dropna().astype(str).unique().tolist()
    for value in task.get("exclude", []):
        if str(value) in present:
            continue
        near = difflib.get_close_matches(str(value), present, n=1, cutoff=0.6)
        hint = (
            f"nearest label: {near[0]!r}"
            if near
            else f"labels: {sorted(present)[:10]}{' ...' if len(present) > 10 else ''}"
        )
        raise ValueError(
            f"{where}: task {task['name']!r} excludes {str(value)!r} (tasks[].exclude), which "
            f"is not a label of column {task['column']!r}, so nothing would be excluded; {hint}"
        )


def whitespace_twins(obs: pd.DataFrame, task: Mapping[str, Any], where: str) -> list[str]:
    """Warnings for labels of a task that differ only in surrounding whitespace ("Mono" and
    "Mono "): they count as different labels."""
    labels = pd.Series(obs[task["column"]].dropna().astype(str).unique())
    stripped = labels.str.strip()
    twins = labels[stripped.duplicated(keep=False).to_numpy()]
    if twins.empty:
        return []
    groups = [
        sorted(twins[stripped[twins.index] == key].tolist())
        for key in sorted(set(stripped[twins.index]))
    ]
    shown = "; ".join(" and ".join(repr(v) for v in group) for group in groups[:5])
    return [
        f"{where}: task {task['name']!r} (column {task['column']!r}): {len(groups)} label(s) "
        f"differ only in surrounding whitespace and are counted as different labels: {shown}"
        f"{' ...' if len(groups) > 5 else ''}; strip the spaces in the input if they are one"
    ]


def check_whitening(
    n_controls: int, dim: int, whitening: Mapping[str, Any], where: str
) -> list[str]:
    """PCA whitening fitted on n controls spans at most n - 1 directions: with n <= dim it keeps
    at most n - 1 of the dim dimensions and drops the others from every token (the dictionaries
    never see them; their reconstruction is measured in the kept dimensions only). Refused
    unless ``whitening.allow_dropped_dimensions`` accepts it (then a warning) or
    ``whitening.n_components`` is below n (fewer kept by choice)."""
    components = whitening.get("n_components")
    if (
        "pca" not in whitening.get("methods", ())
        or n_controls > dim
        or (components is not None and components < n_controls)
    ):
        return []
    said = (
        f"{where}: {n_controls} control rows for {dim}-dimensional tokens: the PCA whitening "
        f"fitted on them keeps at most {n_controls - 1} of the {dim} dimensions and drops the "
        f"other {dim - n_controls + 1} from every token (the dictionaries never see them, and "
        "their reconstruction is measured in the kept dimensions only)"
    )
    if whitening.get("allow_dropped_dimensions"):
        return [f"{said}; accepted by whitening.allow_dropped_dimensions"]
    raise ValueError(
        f"{said}. Add controls, set whitening.n_components below {n_controls}, use "
        "whitening.methods: [none], or accept it with whitening.allow_dropped_dimensions: true"
    )


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
    *,
    source: str | None = None,
    whitening: Mapping[str, Any] | None = None,
    sparsity: Sequence[int] = (),
) -> tuple[dict[str, Any], list[str]]:
    """Every check of the module docstring but the enrichment's (``probe``: the probes'
    split settings, default `ProbeSettings()`; ``source``: the user's input the store was made
    from, named in every message beside the store; ``whitening``: the `whitening` section;
    ``sparsity``: the dataset's `dictionary.sparsity`); returns (a report, warnings)."""
    where = f"{source} (token store {store.files.obs})" if source else str(store.files.obs)
    probe = probe or ProbeSettings()
    check_values(store, source)
    report: dict[str, Any] = {"dim": store.dim, **check_annotations(store, where)}
    too_dense = [int(k) for k in sparsity if int(k) > store.dim]
    if too_dense:
        raise ValueError(
            f"{where}: dictionary.sparsity {too_dense[0]} exceeds the tokens' dimension "
            f"{store.dim}: codes with more non-zeros than the tokens have dimensions are not "
            "sparser than the tokens and fall short of the configured sparsity"
        )
    units = split_units(store.obs, list(resample_unit))
    report["tasks"] = [
        check_task(store.obs, task, min_label_size, where, probe, units) for task in tasks
    ]
    warnings = [w for task in tasks for w in whitespace_twins(store.obs, task, where)]
    warnings += check_whitening(report["n_controls"], store.dim, whitening or {}, where)
    for task in report["tasks"]:
        if task["rare_labels"]:
            warnings.append(
                f"{where}: task {task['task']!r}: labels with fewer than {min_label_size} tokens "
                f"are left out of selectivity and probing: {task['rare_labels']}"
            )
    return report, warnings
