"""Linear probing: class-balanced logistic regression, balanced test accuracy (BTA), on a
train/test split that keeps experiments (groups) apart."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.evaluate.labels import label_series, rare_labels, task_labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSettings:
    """The probe's settings (config section evaluate.probe)."""

    test_fraction: float = 0.25
    max_iter: int = 300
    C: float = 1.0
    max_train: int | None = 20000
    seed: int = 0


def _require_column(obs: pd.DataFrame, column: str, what: str) -> pd.Series:
    if column not in obs.columns:
        raise ValueError(f"obs: {what} column {column!r} not found; available: {list(obs.columns)}")
    return obs[column].reset_index(drop=True)


def probe_split_masks(
    obs: pd.DataFrame,
    label_column: str,
    *,
    group_column: str | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split for probing; returns boolean (train, test) masks over obs rows.

    Rows with a missing label are in neither. With ``group_column``, whole groups (e.g.
    experiments) go to test until about ``test_fraction`` of the labelled rows are there, and
    test rows whose label never occurs in train are dropped (in neither mask), so no group is
    on both sides. Without it, a stratified random split (unstratified, with a logged warning,
    when a class has fewer than 2 rows); test rows whose label is absent from train are moved
    to train, so every class is trained on.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    labels = _require_column(obs, label_column, "label")
    n = len(obs)
    labelled = ~labels.isna().to_numpy()
    idx = np.flatnonzero(labelled)
    if idx.shape[0] < 2:
        raise ValueError(
            f"obs column {label_column!r}: need at least 2 labelled rows to split, got "
            f"{idx.shape[0]}"
        )
    y = labels[labelled].astype(str).to_numpy()
    test = np.zeros(n, dtype=bool)
    train = np.zeros(n, dtype=bool)
    if group_column is not None:
        groups = _require_column(obs, group_column, "group")[labelled]
        in_train, in_test = _grouped_split(
            y, groups, test_fraction, seed, label_column, group_column
        )
    else:
        in_train, in_test = _random_split(y, test_fraction, seed, label_column)
    train[idx[in_train]] = True
    test[idx[in_test]] = True
    return train, test


def _grouped_split(
    y: np.ndarray,
    groups: pd.Series,
    test_fraction: float,
    seed: int,
    label_column: str,
    group_column: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) masks over labelled rows: the fewest shuffled groups whose size is
    nearest the test fraction go to test; test rows of labels absent from train are dropped."""
    codes, uniq = pd.factorize(groups, use_na_sentinel=False)
    n_groups = len(uniq)
    if n_groups < 2:
        raise ValueError(
            f"obs column {group_column!r}: a grouped split needs at least 2 groups among "
            f"labelled rows, got {n_groups}"
        )
    sizes = np.bincount(codes, minlength=n_groups)
    order = np.random.default_rng(seed).permutation(n_groups)
    cum = np.cumsum(sizes[order])
    target = test_fraction * len(y)
    k = int(np.searchsorted(cum, target)) + 1  # fewest groups reaching the target
    if k > 1 and abs(cum[k - 2] - target) <= abs(cum[k - 1] - target):
        k -= 1
    k = min(max(k, 1), n_groups - 1)
    in_test = np.isin(codes, order[:k])
    keep = in_test & np.isin(y, np.unique(y[~in_test]))
    if not keep.any():
        raise ValueError(
            f"no label of the test groups of obs column {group_column!r} occurs in the train "
            f"groups: the labels are confounded with {group_column!r} (each label in groups "
            "of its own), so a probe that keeps the groups apart cannot be tested; group by "
            "a column that the labels cross, or drop group_by"
        )
    n_dropped = int(in_test.sum() - keep.sum())
    if n_dropped:
        logger.info(
            "probe split on %r grouped by %r: dropped %d test rows whose label is absent "
            "from train",
            label_column,
            group_column,
            n_dropped,
        )
    return ~in_test, keep


def _random_split(
    y: np.ndarray, test_fraction: float, seed: int, label_column: str
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) masks over labelled rows: stratified where every class has 2 rows, else
    unstratified; test rows of labels absent from train move to train."""
    from sklearn.model_selection import train_test_split  # sklearn: only probing needs it

    _, class_counts = np.unique(y, return_counts=True)
    stratify = y
    if class_counts.min() < 2:
        logger.warning(
            "probe split on %r: a class has fewer than 2 rows; using an unstratified split",
            label_column,
        )
        stratify = None
    positions = np.arange(len(y))
    try:
        _, test_pos = train_test_split(
            positions, test_size=test_fraction, random_state=seed, stratify=stratify
        )
    except ValueError as err:
        logger.warning(
            "probe split on %r: stratified split impossible (%s); using an unstratified split",
            label_column,
            err,
        )
        _, test_pos = train_test_split(positions, test_size=test_fraction, random_state=seed)
    in_test = np.zeros(len(y), dtype=bool)
    in_test[test_pos] = True
    missing = in_test & ~np.isin(y, np.unique(y[~in_test]))
    if missing.any():
        logger.info(
            "probe split on %r: moved %d test rows whose label was absent from train to train",
            label_column,
            int(missing.sum()),
        )
        in_test &= ~missing
    return ~in_test, in_test


def _probe_rows(features, y, name: str):
    """Validate one side of the probe and drop rows with a missing label."""
    if features.shape[0] != len(y):
        raise ValueError(
            f"{name}: features have {features.shape[0]} rows but there are {len(y)} labels"
        )
    lab = label_series(y, f"y_{name}")
    keep = ~lab.isna().to_numpy()
    if not keep.all():
        logger.info("linear probe: dropping %d %s rows with a missing label", (~keep).sum(), name)
        features = features[np.flatnonzero(keep)]
    return features, lab[keep].astype(str).to_numpy()


def linear_probe(
    features_train: np.ndarray | sp.spmatrix,
    y_train: np.ndarray | pd.Series,
    features_test: np.ndarray | sp.spmatrix,
    y_test: np.ndarray | pd.Series,
    *,
    max_iter: int = 500,
    C: float = 1.0,
    seed: int = 0,
    max_train: int | None = None,
    bootstrap: Mapping[str, Any] | None = None,
    test_units: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Class-balanced logistic-regression probe; returns balanced test accuracy and sizes.

    With ``bootstrap`` (replicates, level, seed), also ``bta_low`` and ``bta_high``: the
    bootstrap interval of the BTA over the test rows, resampling whole ``test_units`` (one
    per test row; default every row on its own).

    Features are standardised on the training rows (without centring for sparse input, so it
    stays sparse). With ``max_train``, a seeded stratified subsample of the training rows is
    used. Returns ``bta``, ``n_train``, ``n_test``, ``n_classes`` (classes present in test),
    ``n_classes_train`` and ``chance`` (= 1 / n_classes).
    """
    x_train, x_test = _as_feature_pair(features_train, features_test)
    x_train, ytr = _probe_rows(x_train, y_train, "train")
    if test_units is not None:
        test_units = np.asarray(test_units)[label_series(y_test, "y_test").notna().to_numpy()]
    x_test, yte = _probe_rows(x_test, y_test, "test")
    if yte.shape[0] == 0:
        raise ValueError("y_test: no labelled test rows")
    if np.unique(ytr).shape[0] < 2:
        raise ValueError(
            f"y_train: a probe needs at least 2 classes in train, got {np.unique(ytr).tolist()}"
        )
    if max_train is not None and ytr.shape[0] > max_train:
        x_train, ytr = _subsample(x_train, ytr, max_train, seed)

    classes_train = np.unique(ytr)
    classes_test = np.unique(yte)
    unseen = np.setdiff1d(classes_test, classes_train)
    if unseen.shape[0]:
        logger.warning(
            "linear probe: %d test classes never seen in train (they count as misclassified)",
            unseen.shape[0],
        )
    pred = _fit_predict(x_train, ytr, x_test, max_iter=max_iter, C=C, seed=seed)
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        # y_pred may hold classes absent from y_test; balanced accuracy averages over y_test only.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        bta = float(balanced_accuracy_score(yte, pred))
    n_classes = int(classes_test.shape[0])
    interval = {}
    if bootstrap is not None:
        from cellconcepts.evaluate.uncertainty import recall_intervals

        units = np.arange(len(yte)) if test_units is None else test_units
        row = recall_intervals(yte, pred, units, **bootstrap).iloc[-1]
        interval = {"bta_low": float(row["low"]), "bta_high": float(row["high"])}
    return {
        "bta": bta,
        **interval,
        "n_train": int(ytr.shape[0]),
        "n_test": int(yte.shape[0]),
        "n_classes": n_classes,
        "n_classes_train": int(classes_train.shape[0]),
        "chance": 1.0 / n_classes,
    }


def _as_feature_pair(features_train, features_test) -> tuple:
    """Both sides as CSR (sparse input) or 2-D arrays, with the same number of columns."""
    sparse_input = sp.issparse(features_train)
    if sparse_input != sp.issparse(features_test):
        raise ValueError("features_train and features_test: expected both sparse or both dense")
    if sparse_input:
        x_train, x_test = sp.csr_matrix(features_train), sp.csr_matrix(features_test)
    else:
        x_train, x_test = np.asarray(features_train), np.asarray(features_test)
        if x_train.ndim != 2 or x_test.ndim != 2:
            raise ValueError(
                f"features: expected 2-D arrays, got {x_train.shape} and {x_test.shape}"
            )
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"features: train has {x_train.shape[1]} columns but test has {x_test.shape[1]}"
        )
    return x_train, x_test


def _subsample(x_train, ytr: np.ndarray, max_train: int, seed: int) -> tuple:
    """A seeded, stratified (else uniform) subsample of ``max_train`` training rows."""
    sub = subsample_positions(ytr, max_train, seed)
    return x_train[sub], ytr[sub]


def subsample_positions(ytr: np.ndarray, max_train: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded, stratified (else uniform) subsample of ``max_train`` of
    the labels ``ytr``."""
    from sklearn.model_selection import train_test_split

    pos = np.arange(ytr.shape[0])
    try:
        sub, _ = train_test_split(pos, train_size=max_train, random_state=seed, stratify=ytr)
    except ValueError:
        logger.info("linear probe: stratified subsample impossible; subsampling uniformly")
        sub = np.random.default_rng(seed).choice(pos, size=max_train, replace=False)
    sub = np.sort(sub)
    if np.unique(ytr[sub]).shape[0] < 2:
        raise ValueError(f"max_train={max_train}: the subsample has fewer than 2 classes")
    return sub


def fit_probe(x_train, ytr: np.ndarray, *, max_iter: int, C: float, seed: int):
    """The probe fitted on the training rows: a function from rows to (n, classes) decision
    scores, and the classes. Standardised on the training rows (no centring for sparse
    input, so it stays sparse); class-balanced logistic regression."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler(with_mean=not sp.issparse(x_train))
    clf = LogisticRegression(class_weight="balanced", max_iter=max_iter, C=C, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.fit_transform(x_train), ytr)
    if np.max(clf.n_iter_) >= max_iter:
        logger.warning(
            "linear probe: logistic regression did not converge in max_iter=%d iterations",
            max_iter,
        )

    def scores(x) -> np.ndarray:
        values = clf.decision_function(scaler.transform(x))
        return np.column_stack([-values, values]) if values.ndim == 1 else values

    return scores, clf.classes_


def _fit_predict(x_train, ytr: np.ndarray, x_test, *, max_iter: int, C: float, seed: int):
    """Fit the probe (`fit_probe`) and predict the test rows."""
    scores, classes = fit_probe(x_train, ytr, max_iter=max_iter, C=C, seed=seed)
    return classes[np.argmax(scores(x_test), axis=1)]


def task_split(
    table: pd.DataFrame,
    task: Mapping[str, Any],
    probe: ProbeSettings,
    min_label_size: int = 1,
    units: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """A task's probe rows: (rows kept, their labels, train and test masks over the kept
    rows, labels left out as rarer than ``min_label_size``). Whole ``group_by`` groups go to
    one side; for a task without one, whole ``units`` (one code per row: the dataset's
    `resample_unit`, e.g. wells, whose rows are not independent) where given. Depends only on
    the obs and the seed, so every representation is probed on the same rows, and
    validate_dataset can try the split before anything is trained."""
    labels = task_labels(table, task)
    rare = rare_labels(labels, min_label_size)
    labels = labels.where(~labels.isin(list(rare)), np.nan)
    keep = labels.notna().to_numpy()
    kept = table.loc[keep].reset_index(drop=True)
    kept["_label"] = labels[keep].to_numpy()
    group_column = task.get("group_by")
    if group_column is None and units is not None:
        kept["_unit"] = np.asarray(units)[keep]
        group_column = "_unit"
    try:
        train, test = probe_split_masks(
            kept,
            "_label",
            group_column=group_column,
            test_fraction=probe.test_fraction,
            seed=probe.seed,
        )
    except ValueError as err:
        where = f"task {task['name']!r} (column {task['column']!r})"
        message = f"{where}: {err}".replace("'_label'", "of labels")
        raise ValueError(message.replace("'_unit'", "of resample_unit")) from err
    return keep, kept["_label"].to_numpy(), train, test, rare


def probe_tasks(
    representations: Mapping[str, Any],
    table: pd.DataFrame,
    tasks: Sequence[Mapping[str, Any]],
    probe: ProbeSettings,
    min_label_size: int = 1,
    bootstrap: Mapping[str, Any] | None = None,
    units: np.ndarray | None = None,
    split_units: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """BTA rows (task, representation, bta, sizes, n_rare_labels) of every representation on
    every task; labels of fewer than ``min_label_size`` tokens are left out. With
    ``bootstrap``, each BTA's interval over the test rows, resampling whole ``units`` (one
    per obs row; default every row on its own).

    The split per task (`task_split`, whole ``split_units`` for tasks without ``group_by``)
    is the same for every representation.
    """
    rows = []
    for task in tasks:
        keep, y, train, test, rare = task_split(table, task, probe, min_label_size, split_units)
        where = f"task {task['name']!r} (column {task['column']!r})"
        train_pos, test_pos = np.flatnonzero(train), np.flatnonzero(test)
        if probe.max_train is not None and len(train_pos) > probe.max_train:
            # Subsampled before any row is read, so a store larger than memory is never
            # gathered whole: only the rows the probe uses are.
            try:
                sub = subsample_positions(y[train_pos], probe.max_train, probe.seed)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err
            train_pos = train_pos[sub]
        rows_kept = np.flatnonzero(keep)
        for name, features in representations.items():
            try:
                result = linear_probe(
                    features[rows_kept[train_pos]],
                    y[train_pos],
                    features[rows_kept[test_pos]],
                    y[test_pos],
                    max_iter=probe.max_iter,
                    C=probe.C,
                    seed=probe.seed,
                    bootstrap=bootstrap,
                    test_units=None if units is None else units[rows_kept[test_pos]],
                )
            except ValueError as err:
                raise ValueError(f"{where}, {name}: {err}") from err
            rows.append(
                {"task": task["name"], "representation": name, **result, "n_rare_labels": len(rare)}
            )
            logger.info("probe %s on %s: BTA %.3f", task["name"], name, result["bta"])
    return rows
