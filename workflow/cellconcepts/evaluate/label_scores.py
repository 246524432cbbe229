"""Per label of a task, the best feature of a dictionary, scored against what chance gives.

The paper's score is the best avg selectivity over M features, chosen and scored on the same
tokens: a maximum of M noisy numbers, above 0 even when no feature means anything. Beside it
(`SCORES`):

- ``insample_avg``: the paper's score (best of M on every labelled token);
- ``heldout_avg``: the feature chosen on the task's training split, scored on its test split
  (`probing.task_split`: whole ``group_by`` groups on one side, the probe's split);
- ``heldout_avg_matched``: the same, choosing only among features active on at most
  ``matched_frequency`` times the label's share of the training tokens, so that a feature
  cannot win by firing on many tokens (avg selectivity rewards coverage);
- ``heldout_ap``: average precision of |code| (`evaluate.precision`), chosen on training,
  scored on test: threshold-free, and not rewarding coverage; its chance level is the
  label's share of the test tokens.

Every score gets a null from label permutations that keep the design
(`evaluate.permutation`): the best-of-M choice is redone on each permutation for the
selectivity scores, so the null is that of the whole procedure; for average precision the
feature chosen on the real training labels is scored on permuted test labels (a valid null
for a feature chosen on other tokens, and M times cheaper). Per label: null mean, 95th
percentile, permutation p-value ``(1 + #{null >= score}) / (1 + P)`` and Benjamini-Hochberg
q-value across the task's labels.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import false_discovery_control

from cellconcepts.evaluate.permutation import codes_of, permutation_design, permuted_labels
from cellconcepts.evaluate.precision import average_precision, chosen_feature_precision
from cellconcepts.evaluate.probing import ProbeSettings, task_split
from cellconcepts.evaluate.selectivity import active_indicator, as_csr
from cellconcepts.evaluate.uncertainty import avg_selectivity

log = logging.getLogger(__name__)

SELECTIVITY_SCORES = ("insample_avg", "heldout_avg", "heldout_avg_matched")
SCORES = (*SELECTIVITY_SCORES, "heldout_ap")
TRAIN, TEST, OTHER = 0, 1, 2  # sides of a labelled token: training, test, in neither split
TOLERANCE = 1e-12  # a null value counts as >= the score within float rounding


@dataclass(frozen=True)
class SignificanceSettings:
    """The permutation null (config section evaluate.null; its defaults live in the schema)."""

    permutations: int
    seed: int
    fdr: float
    matched_frequency: float


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH-adjusted q-values (`scipy.stats.false_discovery_control`); NaN p-values stay NaN
    and do not count as tests."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        q[tested] = false_discovery_control(p[tested])
    return q


def null_summary(score: np.ndarray, null: np.ndarray) -> dict[str, np.ndarray]:
    """Per label: the null's mean and 95th percentile and the permutation p-value of
    ``score`` (C,) against ``null`` (P, C); NaN where the score is."""
    finite = ~np.isnan(null)
    with np.errstate(invalid="ignore"):
        exceed = (null >= score[None, :] - TOLERANCE) & finite
        p = (1.0 + exceed.sum(axis=0)) / (1.0 + finite.sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, null, 0.0).sum(axis=0) / finite.sum(axis=0)
    p95 = np.full(score.shape, np.nan)
    some = finite.any(axis=0)
    if some.any():
        p95[some] = np.nanpercentile(null[:, some], 95, axis=0)
    return {"null_mean": mean, "null_p95": p95, "p_value": np.where(np.isnan(score), np.nan, p)}


@dataclass
class TaskDesign:
    """One task's labelled tokens: label codes, held-out sides, and the permutation design."""

    name: str
    classes: np.ndarray  # (C,) label values, sorted
    label_index: np.ndarray  # (n,) code into classes, -1 unlabelled
    side: np.ndarray  # (n,) TRAIN / TEST / OTHER for labelled tokens
    blocks: np.ndarray
    units: np.ndarray | None

    @property
    def n_labels(self) -> int:
        return int(self.classes.shape[0])


def task_design(
    obs: pd.DataFrame,
    task: Mapping[str, Any],
    probe: ProbeSettings,
    units: np.ndarray | None = None,
    min_label_size: int = 1,
) -> TaskDesign:
    """A task's labels (rare ones left out, as for selectivity), its held-out split (the
    probe's: `probing.task_split`) and its blocks (``group_by``, else one block)."""
    keep, y, train, test, _ = task_split(obs, task, probe, min_label_size, units)
    classes, index = np.unique(y, return_inverse=True)
    label_index = np.full(len(obs), -1, dtype=np.int64)
    label_index[keep] = index
    side = np.full(len(obs), OTHER, dtype=np.int64)
    rows = np.flatnonzero(keep)
    side[rows[train]] = TRAIN
    side[rows[test]] = TEST
    group_by = task.get("group_by")
    blocks = codes_of(obs[group_by] if group_by else None, len(obs))
    return TaskDesign(task["name"], classes.astype(str), label_index, side, blocks, units)


@numba.njit(cache=True)
def _avg_view(counts, sizes, out):
    """Avg selectivity (C, M) of one side's active ``counts`` (C, M) and label ``sizes``
    (C,) into ``out``: P(active | i) minus its mean over the other labels present; NaN rows
    for labels without tokens (and everywhere with fewer than two labels)."""
    n_labels, n_features = counts.shape
    present = 0
    for i in range(n_labels):
        if sizes[i] > 0:
            present += 1
    out[:] = np.nan
    if present < 2:
        return
    total = np.zeros(n_features)
    for i in range(n_labels):
        if sizes[i] > 0:
            for m in range(n_features):
                total[m] += counts[i, m] / sizes[i]
    for i in range(n_labels):
        if sizes[i] > 0:
            for m in range(n_features):
                p = counts[i, m] / sizes[i]
                out[i, m] = p - (total[m] - p) / (present - 1)


@numba.njit(cache=True)
def _best_of_features(indptr, indices, labels, side, n_labels, allowed, values, chosen):
    """The three selectivity scores of `SELECTIVITY_SCORES` for each of R label vectors
    ``labels`` (R, n) over the active entries of a CSR indicator (``indptr``, ``indices``):
    per vector, count every side's active tokens per label and feature, then per label the
    best feature on all tokens (``insample_avg``), the best on the training side scored on
    the test side (``heldout_avg``), and the same among the features ``allowed`` (C, M) for
    the label (``heldout_avg_matched``). Writes ``values`` (R, 3, C) and ``chosen`` (R, 3, C),
    -1 and NaN where a label has no feature to choose or no token to be scored on."""
    n_rep, n = labels.shape
    n_features = allowed.shape[1]
    counts = np.zeros((3, n_labels, n_features))
    sizes = np.zeros((3, n_labels))
    avg_all = np.empty((n_labels, n_features))
    avg_train = np.empty((n_labels, n_features))
    avg_test = np.empty((n_labels, n_features))
    for r in range(n_rep):
        counts[:] = 0.0
        sizes[:] = 0.0
        for t in range(n):
            label = labels[r, t]
            if label < 0:
                continue
            s = side[t]
            sizes[s, label] += 1.0
            for e in range(indptr[t], indptr[t + 1]):
                counts[s, label, indices[e]] += 1.0
        _avg_view(counts[0] + counts[1] + counts[2], sizes[0] + sizes[1] + sizes[2], avg_all)
        _avg_view(counts[0], sizes[0], avg_train)
        _avg_view(counts[1], sizes[1], avg_test)
        for i in range(n_labels):
            picks = (-1, -1, -1)
            best = (-np.inf, -np.inf, -np.inf)
            for m in range(n_features):
                if avg_all[i, m] > best[0]:
                    best = (avg_all[i, m], best[1], best[2])
                    picks = (m, picks[1], picks[2])
                if avg_train[i, m] > best[1]:
                    best = (best[0], avg_train[i, m], best[2])
                    picks = (picks[0], m, picks[2])
                if allowed[i, m] and avg_train[i, m] > best[2]:
                    best = (best[0], best[1], avg_train[i, m])
                    picks = (picks[0], picks[1], m)
            for k in range(3):
                chosen[r, k, i] = picks[k]
                values[r, k, i] = np.nan
            if picks[0] >= 0:
                values[r, 0, i] = avg_all[i, picks[0]]
            for k in (1, 2):
                if picks[k] >= 0:
                    values[r, k, i] = avg_test[i, picks[k]]


def selectivity_scores(
    active: sp.csr_matrix, labels: np.ndarray, side: np.ndarray, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(R, 3, C) values and chosen features of `SELECTIVITY_SCORES` for R label vectors
    ``labels`` (R, n) (`_best_of_features`)."""
    n_rep = labels.shape[0]
    n_labels = allowed.shape[0]
    values = np.empty((n_rep, 3, n_labels))
    chosen = np.empty((n_rep, 3, n_labels), dtype=np.int64)
    _best_of_features(
        active.indptr.astype(np.int64),
        active.indices.astype(np.int64),
        np.ascontiguousarray(labels, dtype=np.int64),
        np.asarray(side, dtype=np.int64),
        n_labels,
        allowed,
        values,
        chosen,
    )
    return values, chosen


def _masked_argmax(values: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Argmax over the last axis, ignoring NaN and features not ``allowed`` (-1 where none)."""
    masked = np.where(np.isnan(values), -np.inf, values)
    if allowed is not None:
        masked = np.where(allowed, masked, -np.inf)
    best = np.argmax(masked, axis=-1)
    none = np.take_along_axis(masked, best[..., None], axis=-1)[..., 0] == -np.inf
    return np.where(none, -1, best)


@dataclass
class TaskScores:
    """One task's per-label table (`SCORES` rows) and, per label, the in-sample null maxima
    (for counting features above null)."""

    table: pd.DataFrame
    insample_null: np.ndarray  # (P, C) best in-sample avg selectivity under each permutation
    insample_avg: np.ndarray  # (C, M) observed avg selectivity of every feature


def task_scores(
    codes: sp.spmatrix | np.ndarray, design: TaskDesign, settings: SignificanceSettings
) -> TaskScores:
    """Every score of `SCORES` per label of one task, each with its permutation null."""
    csr = as_csr(codes)
    active = active_indicator(csr)
    n = active.shape[0]
    n_labels = design.n_labels
    labelled = design.label_index >= 0
    sizes = np.stack(
        [
            np.bincount(design.label_index[labelled & (design.side == s)], minlength=n_labels)
            for s in (TRAIN, TEST, OTHER)
        ]
    )
    train_rows = np.flatnonzero(labelled & (design.side == TRAIN))
    train_frequency = np.asarray(active[train_rows].sum(axis=0)).ravel() / max(
        train_rows.shape[0], 1
    )
    share = sizes[TRAIN] / max(sizes[TRAIN].sum(), 1)
    allowed = train_frequency[None, :] <= settings.matched_frequency * share[:, None]
    observed, chosen_features = selectivity_scores(
        active, design.label_index[None, :], design.side, allowed
    )
    values = {name: observed[0, k] for k, name in enumerate(SELECTIVITY_SCORES)}
    chosen = {name: chosen_features[0, k] for k, name in enumerate(SELECTIVITY_SCORES)}
    test_rows = np.flatnonzero(labelled & (design.side == TEST))
    chosen["heldout_ap"] = _ap_choice(csr, design)
    test_codes = csr[test_rows]
    values["heldout_ap"] = chosen_feature_precision(
        test_codes, chosen["heldout_ap"], design.label_index[test_rows]
    )[0]
    nulls: dict[str, list[np.ndarray]] = {name: [] for name in SCORES}
    pdesign = permutation_design(design.label_index, design.blocks, design.units)
    for labels in permuted_labels(pdesign, settings.permutations, settings.seed):
        null, _ = selectivity_scores(active, labels, design.side, allowed)
        for k, name in enumerate(SELECTIVITY_SCORES):
            nulls[name].append(null[:, k])
        nulls["heldout_ap"].append(
            chosen_feature_precision(test_codes, chosen["heldout_ap"], labels[:, test_rows])
        )
    frequency = np.asarray(active.sum(axis=0)).ravel() / max(n, 1)
    sizes_all = sizes.sum(axis=0)
    frames = []
    for name in SCORES:
        feature = chosen[name]
        frame = pd.DataFrame(
            {
                "task": design.name,
                "label": design.classes,
                "n_tokens": sizes_all,
                "n_train": sizes[TRAIN],
                "n_test": sizes[TEST],
                "label_frequency": sizes_all / max(sizes_all.sum(), 1),
                "score": name,
                "value": values[name],
                "chance": sizes[TEST] / max(sizes[TEST].sum(), 1) if name == "heldout_ap" else 0.0,
                "feature": feature,
                "feature_frequency": np.where(
                    feature >= 0, frequency[np.maximum(feature, 0)], np.nan
                ),
                **null_summary(values[name], np.concatenate(nulls[name], axis=0)),
            }
        )
        frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy())
        frame["above_null"] = frame["q_value"] <= settings.fdr
        frames.append(frame)
    insample_avg = avg_selectivity(active, design.label_index, n_labels, np.ones(n))
    return TaskScores(
        pd.concat(frames, ignore_index=True),
        np.concatenate(nulls["insample_avg"], axis=0),
        insample_avg,
    )


def _ap_choice(csr: sp.csr_matrix, design: TaskDesign) -> np.ndarray:
    """Per label, the feature with the highest average precision on the training tokens
    (-1 where the label has no training token)."""
    train_labels = np.where(design.side == TRAIN, design.label_index, -1)
    return _masked_argmax(average_precision(csr, train_labels, design.n_labels))


def features_above_null(result: TaskScores, fdr: float) -> np.ndarray:
    """(M,) whether each feature's in-sample avg selectivity for some label is above the
    null of the best of M for that label, at the Benjamini-Hochberg cutoff of the task's
    labels: a feature counts where its own permutation p-value against the best-of-M null
    (a family-wise control over the M features) is at most the largest label p-value that
    BH accepts. A feature of a label that is not above null never counts."""
    table = result.table[result.table["score"] == "insample_avg"]
    accepted = table.loc[table["q_value"] <= fdr, "p_value"]
    if accepted.empty:
        return np.zeros(result.insample_avg.shape[1], dtype=bool)
    cutoff = float(accepted.max())
    selected = np.zeros(result.insample_avg.shape, dtype=bool)
    for label in range(result.insample_null.shape[1]):
        null = np.sort(result.insample_null[:, label])
        null = null[~np.isnan(null)]  # as `null_summary`: only permutations with a value
        avg = result.insample_avg[label]
        exceed = null.shape[0] - np.searchsorted(null, avg - TOLERANCE, side="left")
        p = (1.0 + exceed) / (1.0 + null.shape[0])
        selected[label] = ~np.isnan(avg) & (p <= cutoff)
    return selected.any(axis=0)


def label_score_tables(
    codes: sp.spmatrix | np.ndarray,
    obs: pd.DataFrame,
    tasks: Sequence[Mapping[str, Any]],
    probe: ProbeSettings,
    settings: SignificanceSettings,
    units: np.ndarray | None = None,
    min_label_size: int = 1,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every task's label scores (`task_scores`), and per task the features above null
    (`features_above_null`)."""
    tables, above = [], {}
    for task in tasks:
        design = task_design(obs, task, probe, units, min_label_size)
        result = task_scores(codes, design, settings)
        tables.append(result.table)
        above[task["name"]] = features_above_null(result, settings.fdr)
        shown = result.table[result.table["score"] == "heldout_avg"]
        log.info(
            "task %s: %d of %d labels above null held out (FDR %.2f); %d features above null "
            "in-sample",
            task["name"],
            int(shown["above_null"].sum()),
            len(shown),
            settings.fdr,
            int(above[task["name"]].sum()),
        )
    return pd.concat(tables, ignore_index=True), above
