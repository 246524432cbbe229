"""Average precision of a feature's code magnitude for a label: a threshold-free companion of
avg selectivity that does not reward coverage.

Avg selectivity counts a token as active or not, so a feature active on every token of a
label and on many others scores as well as a precise one; average precision ranks tokens by
|code| and rewards the label's tokens at the top of the ranking. Its chance level is the
label's share of the tokens. Ties (every inactive token shares |code| = 0) form one step, as
in scikit-learn's ``average_precision_score``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _step_ends(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Positions that end a run of equal ``values`` within the same ``segment`` (both sorted
    so that runs are contiguous)."""
    last = np.ones(values.shape[0], dtype=bool)
    last[:-1] = (values[1:] != values[:-1]) | (segment[1:] != segment[:-1])
    return np.flatnonzero(last)


def average_precision(
    codes: sp.csr_matrix,
    label_index: np.ndarray,
    n_labels: int,
    *,
    max_entries: int = 4_000_000,
) -> np.ndarray:
    """(labels, features) average precision of |code| for each label against the other
    labelled tokens (tokens of label index -1 are left out). A label absent from the tokens
    gets NaN. Memory stays near ``max_entries`` x labels floats (features in chunks)."""
    label_index = np.asarray(label_index, dtype=np.int64)
    rows = np.flatnonzero(label_index >= 0)
    labels = label_index[rows]
    csc = sp.csc_matrix(abs(sp.csr_matrix(codes)[rows]))
    csc.eliminate_zeros()
    n = rows.shape[0]
    n_i = np.bincount(labels, minlength=n_labels).astype(np.float64)
    n_features = csc.shape[1]
    if n == 0:
        return np.full((n_labels, n_features), np.nan)
    result = np.zeros((n_labels, n_features))
    start = 0
    while start < n_features:
        stop = start + 1
        while stop < n_features and csc.indptr[stop + 1] - csc.indptr[start] <= max_entries:
            stop += 1
        result[:, start:stop] = _precision_block(csc[:, start:stop], labels, n_i, n)
        start = stop
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_i[:, None] > 0, result / n_i[:, None], np.nan)


def _precision_block(
    block: sp.csc_matrix, labels: np.ndarray, n_i: np.ndarray, n: int
) -> np.ndarray:
    """Sum over steps of (true positives gained) x precision, per label and feature of
    ``block``, plus the last step (every token called positive: precision n_i / n)."""
    n_labels, n_features = n_i.shape[0], block.shape[1]
    out = np.zeros((n_labels, n_features))
    column = np.repeat(np.arange(n_features), np.diff(block.indptr))
    if column.size:
        order = np.lexsort((-block.data, column))
        column, values = column[order], block.data[order]
        hits = np.zeros((order.shape[0], n_labels))
        hits[np.arange(order.shape[0]), labels[block.indices[order]]] = 1.0
        true_pos = np.cumsum(hits, axis=0)
        starts = block.indptr[:-1]
        true_pos -= np.vstack([np.zeros((1, n_labels)), true_pos])[starts][column]
        ends = _step_ends(values, column)
        rank = ends - starts[column[ends]] + 1.0
        tp = true_pos[ends]
        previous = np.vstack([np.zeros((1, n_labels)), tp[:-1]])
        previous[np.r_[True, column[ends][1:] != column[ends][:-1]]] = 0.0
        gained = (tp - previous) * tp / rank[:, None]
        np.add.at(out.T, column[ends], gained)
    active = np.diff(block.indptr)
    found = np.zeros((n_labels, n_features))
    if column.size:
        found = np.asarray(
            sp.csr_matrix(
                (np.ones(block.indices.shape[0]), (labels[block.indices], column_of(block))),
                shape=(n_labels, n_features),
            ).toarray()
        )
    remaining = np.where(active[None, :] < n, n_i[:, None] - found, 0.0)
    return out + remaining * n_i[:, None] / n


def column_of(block: sp.csc_matrix) -> np.ndarray:
    """The column of every stored entry of a CSC matrix, in storage order."""
    return np.repeat(np.arange(block.shape[1]), np.diff(block.indptr))


def weighted_average_precision(
    magnitude: np.ndarray,
    positive_mass: np.ndarray,
    mass: np.ndarray,
    total_positive: np.ndarray,
    total: np.ndarray,
) -> np.ndarray:
    """Average precision of one feature for one label under R weightings or labellings of
    the tokens, from its active tokens alone.

    ``magnitude`` (a,) is |code| of the tokens where the feature is active, ``positive_mass``
    (R, a) their weight where they carry the label (0 elsewhere), ``mass`` (R, a) or (a,)
    their weight; ``total_positive`` (R,) and ``total`` (R,) are the label's and all tokens'
    weight, active or not (the inactive ones form the last step). NaN where the label has
    no weight.
    """
    magnitude = np.asarray(magnitude, dtype=np.float64)
    positive_mass = np.atleast_2d(np.asarray(positive_mass, dtype=np.float64))
    mass = np.broadcast_to(np.asarray(mass, dtype=np.float64), positive_mass.shape)
    total_positive = np.asarray(total_positive, dtype=np.float64)
    order = np.argsort(-magnitude, kind="stable")
    ap = np.zeros(positive_mass.shape[0])
    found = np.zeros(positive_mass.shape[0])
    if order.size:
        ends = _step_ends(magnitude[order], np.zeros(order.shape[0], dtype=np.int64))
        tp = np.cumsum(positive_mass[:, order], axis=1)[:, ends]
        seen = np.cumsum(mass[:, order], axis=1)[:, ends]
        gained = np.diff(tp, axis=1, prepend=0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.where(gained > 0, gained * tp / seen, 0.0).sum(axis=1)
        found = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        last = (total_positive - found) / np.asarray(total, dtype=np.float64)
        return np.where(total_positive > 0, ap / total_positive + last, np.nan)


def chosen_feature_precision(
    codes: sp.csr_matrix,
    features: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """(R, C) average precision of each label's chosen feature (``features`` (C,), -1 for
    none: NaN) on the tokens of ``codes`` (n, M), under R labellings ``labels`` (R, n) or one
    (n,), and R token weightings ``weights`` (R, n) or none (every token weighs 1)."""
    labels = np.atleast_2d(labels)
    weights = np.ones(labels.shape[1]) if weights is None else np.asarray(weights, np.float64)
    n_rep = max(labels.shape[0], np.atleast_2d(weights).shape[0])
    out = np.full((n_rep, features.shape[0]), np.nan)
    present = np.flatnonzero(features >= 0)
    columns = sp.csc_matrix(abs(codes[:, features[present]]))
    columns.eliminate_zeros()
    total = np.broadcast_to(weights.sum(axis=-1), (n_rep,))
    for j, label in enumerate(present):
        entries = slice(columns.indptr[j], columns.indptr[j + 1])
        tokens = columns.indices[entries]
        own = weights * (labels == label)
        out[:, label] = weighted_average_precision(
            columns.data[entries], own[..., tokens], weights[..., tokens], own.sum(axis=-1), total
        )
    return out
