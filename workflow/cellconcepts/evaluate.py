"""Evaluation of learned dictionaries: selectivity, atom recovery, linear probing, dead features.

Definitions follow DESIGN.md ("Algorithms"): a feature is *active* on a token when its code is
non-zero; the selectivity of feature m for label i is
``avg = P(active | i) - mean_{j != i} P(active | j)`` and
``max = P(active | i) - max_{j != i} P(active | j)``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = [
    "Selectivity",
    "atom_recovery",
    "atom_recovery_fraction",
    "best_selectivity_per_label",
    "count_dead",
    "dead_features",
    "linear_probe",
    "make_probe_split",
    "probe_split_masks",
    "reconstruction_cosine",
    "selectivity",
    "selectivity_counts",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_csr(codes: sp.spmatrix | sp.sparray | np.ndarray, name: str = "codes") -> sp.csr_matrix:
    """Return ``codes`` as a 2-D CSR matrix (dense arrays are converted, sparse kept sparse)."""
    if sp.issparse(codes):
        csr = sp.csr_matrix(codes)
    else:
        arr = np.asarray(codes)
        if arr.ndim != 2:
            raise ValueError(
                f"{name}: expected a 2-D (n_tokens, n_features) array, got {arr.shape}"
            )
        csr = sp.csr_matrix(arr)
    if csr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n_tokens, n_features) matrix, got {csr.shape}")
    return csr


def _active_indicator(codes: sp.csr_matrix) -> sp.csr_matrix:
    """0/1 float matrix of non-zero codes; explicitly stored zeros are removed first."""
    active = codes.copy()
    active.eliminate_zeros()
    active.data = np.ones_like(active.data, dtype=np.float64)
    return active


def _label_series(labels: np.ndarray | pd.Series | Sequence, name: str) -> pd.Series:
    """Labels as a positional (RangeIndex) Series, whatever the input container."""
    if isinstance(labels, pd.Series):
        return labels.reset_index(drop=True)
    if isinstance(labels, pd.Categorical):
        return pd.Series(labels)
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {arr.shape}")
    return pd.Series(arr)


# --------------------------------------------------------------------------------------------
# selectivity
# --------------------------------------------------------------------------------------------


@dataclass
class Selectivity:
    """Per-label activation probabilities and selectivity scores of every feature."""

    labels: np.ndarray  # (C,) label values as str, sorted
    n_per_label: np.ndarray  # (C,) tokens per label
    p_active: np.ndarray  # (C, M) P(active | label)
    avg: np.ndarray  # (C, M) P(a|i) - mean_{j!=i} P(a|j)
    max: np.ndarray  # (C, M) P(a|i) - max_{j!=i} P(a|j)

    @property
    def n_labels(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.p_active.shape[1])


def selectivity(
    codes: sp.spmatrix | sp.sparray | np.ndarray, labels: np.ndarray | pd.Series
) -> Selectivity:
    """Selectivity of every feature for every label, from (n, M) codes and (n,) labels.

    Uses a sparse one-hot (n, C) times the sparse activity matrix (n, M), so no dense (n, M)
    array is ever built. Tokens with a missing label (NaN/None) are ignored; labels are compared
    as strings. At least two distinct labels are required.
    """
    csr = _as_csr(codes)
    n, n_features = csr.shape
    lab = _label_series(labels, "labels")
    if len(lab) != n:
        raise ValueError(f"labels: expected {n} labels (one per row of codes), got {len(lab)}")
    if n_features == 0:
        raise ValueError("codes: expected at least one feature column, got 0")

    keep = ~lab.isna().to_numpy()
    str_labels = lab[keep].astype(str).to_numpy()
    uniq, inverse = np.unique(str_labels, return_inverse=True)
    if uniq.shape[0] < 2:
        raise ValueError(
            f"labels: selectivity needs at least 2 distinct non-missing labels, got "
            f"{uniq.shape[0]} ({list(uniq)!r}) among {n} tokens ({int((~keep).sum())} missing)"
        )
    n_labels = uniq.shape[0]

    rows = np.flatnonzero(keep)
    onehot = sp.csr_matrix(
        (np.ones(rows.shape[0], dtype=np.float64), (rows, inverse.astype(np.int64))),
        shape=(n, n_labels),
    )
    counts = np.asarray((onehot.T @ _active_indicator(csr)).toarray(), dtype=np.float64)
    n_per_label = np.bincount(inverse, minlength=n_labels).astype(np.int64)
    p_active = counts / n_per_label[:, None]

    mean_others = (p_active.sum(axis=0, keepdims=True) - p_active) / (n_labels - 1)
    avg = p_active - mean_others

    # max over j != i: the column maximum, except on the arg-max row where it is the runner-up.
    top_idx = np.argmax(p_active, axis=0)
    top2 = -np.partition(-p_active, 1, axis=0)[:2]
    max_others = np.broadcast_to(top2[0], p_active.shape).copy()
    cols = np.arange(n_features)
    max_others[top_idx, cols] = top2[1]
    max_sel = p_active - max_others

    return Selectivity(
        labels=uniq.astype(str),
        n_per_label=n_per_label,
        p_active=p_active,
        avg=avg,
        max=max_sel,
    )


def selectivity_counts(
    sel: Selectivity, thresholds: Sequence[float] = (0.5, 0.2)
) -> dict[str, int]:
    """Number of features whose avg selectivity exceeds each threshold for at least one label.

    Keys are ``f"n_features_sel_{t:g}"``, e.g. ``"n_features_sel_0.5"``.
    """
    best = sel.avg.max(axis=0)
    return {f"n_features_sel_{t:g}": int(np.count_nonzero(best > t)) for t in thresholds}


def best_selectivity_per_label(sel: Selectivity) -> pd.DataFrame:
    """One row per label: the best avg selectivity over features (and which feature), and the
    best max selectivity over features; sorted by ``best_avg`` descending (ties: label order)."""
    best_feature = np.argmax(sel.avg, axis=1)
    rows = np.arange(sel.n_labels)
    best_avg = sel.avg[rows, best_feature]
    best_max = sel.max.max(axis=1)
    order = np.lexsort((rows, -best_avg))
    return pd.DataFrame(
        {
            "label": sel.labels[order],
            "n_tokens": sel.n_per_label[order],
            "best_avg": best_avg[order],
            "best_feature": best_feature[order].astype(np.int64),
            "best_max": best_max[order],
        }
    )


# --------------------------------------------------------------------------------------------
# dead features, reconstruction quality
# --------------------------------------------------------------------------------------------


def count_dead(dead_mask: np.ndarray) -> int:
    """Number of dead features in a boolean (M,) mask."""
    mask = np.asarray(dead_mask)
    if mask.dtype != np.bool_ or mask.ndim != 1:
        raise ValueError(
            f"dead_mask: expected a 1-D boolean array, got dtype {mask.dtype} shape {mask.shape}"
        )
    return int(np.count_nonzero(mask))


def dead_features(
    codes: sp.spmatrix | sp.sparray | np.ndarray, *, min_fraction: float = 1e-5
) -> np.ndarray:
    """Boolean (M,) mask of features active on fewer than ``min_fraction`` of the tokens.

    The training loop tracks deadness over its last steps; this is the same criterion applied
    to a set of encoded tokens (e.g. the held-out split).
    """
    csr = _as_csr(codes)
    if csr.shape[0] == 0:
        raise ValueError("codes: expected at least one token row, got 0")
    counts = np.bincount(_active_indicator(csr).indices, minlength=csr.shape[1])
    return counts / csr.shape[0] < min_fraction


def reconstruction_cosine(
    x: np.ndarray, x_hat: np.ndarray, *, batch_size: int = 65536
) -> np.ndarray:
    """Per-row cosine between ``x`` and ``x_hat`` (n,), float64; 0 where either row is all zero.

    Works in row chunks so memory-mapped inputs are never copied whole.
    """
    if x.shape != x_hat.shape or len(x.shape) != 2:
        raise ValueError(
            f"x, x_hat: expected two 2-D arrays of the same shape, got {x.shape} and {x_hat.shape}"
        )
    out = np.zeros(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], batch_size):
        a = np.asarray(x[start : start + batch_size], dtype=np.float64)
        b = np.asarray(x_hat[start : start + batch_size], dtype=np.float64)
        denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        dot = np.einsum("ij,ij->i", a, b)
        ok = denom > 0
        out[start : start + a.shape[0]][ok] = np.clip(dot[ok] / denom[ok], -1.0, 1.0)
    return out


# --------------------------------------------------------------------------------------------
# atom recovery (synthetic data with known dictionary)
# --------------------------------------------------------------------------------------------


def atom_recovery(
    true_atoms: np.ndarray, learned_directions: np.ndarray, threshold: float = 0.9
) -> pd.DataFrame:
    """For each true atom, the learned direction with the largest |cosine| and whether it is at
    least ``threshold``.

    true_atoms: (A, d) rows; learned_directions: (d, M) columns, both in the original space.
    Absolute cosine because ICFL codes are signed. Zero atoms/columns have cosine 0.
    """
    atoms = np.asarray(true_atoms, dtype=np.float64)
    learned = np.asarray(learned_directions, dtype=np.float64)
    if atoms.ndim != 2 or learned.ndim != 2:
        raise ValueError(
            f"true_atoms (A, d) and learned_directions (d, M) must be 2-D, got "
            f"{atoms.shape} and {learned.shape}"
        )
    if atoms.shape[1] != learned.shape[0]:
        raise ValueError(
            f"true_atoms has dimension {atoms.shape[1]} but learned_directions has "
            f"{learned.shape[0]} rows; expected learned_directions as (d, M) columns"
        )
    atom_norm = np.linalg.norm(atoms, axis=1, keepdims=True)
    learned_norm = np.linalg.norm(learned, axis=0, keepdims=True)
    atoms_unit = np.divide(atoms, atom_norm, out=np.zeros_like(atoms), where=atom_norm > 0)
    learned_unit = np.divide(
        learned, learned_norm, out=np.zeros_like(learned), where=learned_norm > 0
    )
    n_atoms = atoms.shape[0]
    if learned.shape[1] == 0:
        best_feature = np.full(n_atoms, -1, dtype=np.int64)
        best_cos = np.zeros(n_atoms)
    else:
        cos = np.abs(atoms_unit @ learned_unit)
        best_feature = np.argmax(cos, axis=1).astype(np.int64)
        best_cos = np.clip(cos[np.arange(n_atoms), best_feature], 0.0, 1.0)
    return pd.DataFrame(
        {
            "atom": np.arange(n_atoms, dtype=np.int64),
            "best_abs_cosine": best_cos,
            "best_feature": best_feature,
            "recovered": best_cos >= threshold,
        }
    )


def atom_recovery_fraction(df: pd.DataFrame) -> float:
    """Fraction of true atoms recovered (NaN for an empty table)."""
    if "recovered" not in df.columns:
        raise ValueError(
            f"atom recovery table: expected a 'recovered' column, got {list(df.columns)}"
        )
    if len(df) == 0:
        return float("nan")
    return float(df["recovered"].to_numpy(dtype=bool).mean())


# --------------------------------------------------------------------------------------------
# linear probing
# --------------------------------------------------------------------------------------------


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
    from sklearn.model_selection import train_test_split  # sklearn: only probing needs it

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
        target = test_fraction * idx.shape[0]
        k = int(np.searchsorted(cum, target)) + 1  # fewest groups reaching the target
        if k > 1 and abs(cum[k - 2] - target) <= abs(cum[k - 1] - target):
            k -= 1
        k = min(max(k, 1), n_groups - 1)
        in_test = np.isin(codes, order[:k])
        train[idx[~in_test]] = True
        train_labels = np.unique(y[~in_test])
        keep = in_test & np.isin(y, train_labels)
        n_dropped = int(in_test.sum() - keep.sum())
        if n_dropped:
            logger.info(
                "probe split on %r grouped by %r: dropped %d test rows whose label is absent "
                "from train",
                label_column,
                group_column,
                n_dropped,
            )
        test[idx[keep]] = True
    else:
        _, class_counts = np.unique(y, return_counts=True)
        stratify = y
        if class_counts.min() < 2:
            logger.warning(
                "probe split on %r: a class has fewer than 2 rows; using an unstratified split",
                label_column,
            )
            stratify = None
        try:
            _, test_pos = train_test_split(
                np.arange(idx.shape[0]),
                test_size=test_fraction,
                random_state=seed,
                stratify=stratify,
            )
        except ValueError as err:
            logger.warning(
                "probe split on %r: stratified split impossible (%s); using an unstratified split",
                label_column,
                err,
            )
            _, test_pos = train_test_split(
                np.arange(idx.shape[0]), test_size=test_fraction, random_state=seed
            )
        in_test = np.zeros(idx.shape[0], dtype=bool)
        in_test[test_pos] = True
        missing = in_test & ~np.isin(y, np.unique(y[~in_test]))
        if missing.any():
            logger.info(
                "probe split on %r: moved %d test rows whose label was absent from train to train",
                label_column,
                int(missing.sum()),
            )
            in_test &= ~missing
        test[idx[in_test]] = True
        train[idx[~in_test]] = True
    return train, test


def make_probe_split(
    obs: pd.DataFrame,
    label_column: str,
    *,
    group_column: str | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> np.ndarray:
    """Boolean test mask of :func:`probe_split_masks`.

    Note: rows that are in neither split (missing labels; with groups, test rows whose label is
    absent from train) are False here, so ``~test`` is *not* the train set; use
    :func:`probe_split_masks` for both masks.
    """
    return probe_split_masks(
        obs, label_column, group_column=group_column, test_fraction=test_fraction, seed=seed
    )[1]


def _probe_rows(features, y, name: str):
    """Validate one side of the probe and drop rows with a missing label."""
    if features.shape[0] != len(y):
        raise ValueError(
            f"{name}: features have {features.shape[0]} rows but there are {len(y)} labels"
        )
    lab = _label_series(y, f"y_{name}")
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
) -> dict[str, float | int]:
    """Class-balanced logistic-regression probe; returns balanced test accuracy and sizes.

    Features are standardised on the training rows (without centring for sparse input, so it
    stays sparse). With ``max_train``, a seeded stratified subsample of the training rows is
    used. Returns ``bta``, ``n_train``, ``n_test``, ``n_classes`` (classes present in test),
    ``n_classes_train`` and ``chance`` (= 1 / n_classes).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

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
    x_train, ytr = _probe_rows(x_train, y_train, "train")
    x_test, yte = _probe_rows(x_test, y_test, "test")
    if yte.shape[0] == 0:
        raise ValueError("y_test: no labelled test rows")
    if np.unique(ytr).shape[0] < 2:
        raise ValueError(
            f"y_train: a probe needs at least 2 classes in train, got {np.unique(ytr).tolist()}"
        )

    if max_train is not None and ytr.shape[0] > max_train:
        pos = np.arange(ytr.shape[0])
        try:
            sub, _ = train_test_split(pos, train_size=max_train, random_state=seed, stratify=ytr)
        except ValueError:
            logger.info("linear probe: stratified subsample impossible; subsampling uniformly")
            sub = np.random.default_rng(seed).choice(pos, size=max_train, replace=False)
        sub = np.sort(sub)
        x_train, ytr = x_train[sub], ytr[sub]
        if np.unique(ytr).shape[0] < 2:
            raise ValueError(f"max_train={max_train}: the subsample has fewer than 2 classes")

    classes_train = np.unique(ytr)
    classes_test = np.unique(yte)
    unseen = np.setdiff1d(classes_test, classes_train)
    if unseen.shape[0]:
        logger.warning(
            "linear probe: %d test classes never seen in train (they count as misclassified)",
            unseen.shape[0],
        )

    scaler = StandardScaler(with_mean=not sparse_input)
    x_train = scaler.fit_transform(x_train)
    x_test = scaler.transform(x_test)
    clf = LogisticRegression(class_weight="balanced", max_iter=max_iter, C=C, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, ytr)
    if np.max(clf.n_iter_) >= max_iter:
        logger.warning(
            "linear probe: logistic regression did not converge in max_iter=%d iterations",
            max_iter,
        )
    pred = clf.predict(x_test)
    with warnings.catch_warnings():
        # y_pred may hold classes absent from y_test; balanced accuracy averages over y_test only.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        bta = float(balanced_accuracy_score(yte, pred))
    n_classes = int(classes_test.shape[0])
    return {
        "bta": bta,
        "n_train": int(ytr.shape[0]),
        "n_test": int(yte.shape[0]),
        "n_classes": n_classes,
        "n_classes_train": int(classes_train.shape[0]),
        "chance": 1.0 / n_classes,
    }
