"""Every pair of dictionary variants (method x whitening), per label and score, with
intervals that hold both the sampling noise (units drawn with replacement) and the training
noise (model seeds drawn with replacement).

A variant's score for a label is the mean over its seeds of that seed's score
(`evaluate.label_scores`; the feature each seed chose stays fixed). One replicate draws unit
weights, the same for every model (so differences are paired over units), and, per variant,
as many seeds as it has, with replacement; the replicate's value is the mean of the drawn
seeds' scores under the drawn weights. A difference whose percentile interval holds 0 is
"no difference". With few seeds the seed part of the interval is coarse (three seeds give
ten distinct draws), so the intervals understate the training noise of few seeds.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.evaluate.label_scores import SCORES, TEST, TaskDesign, task_design
from cellconcepts.evaluate.precision import chosen_feature_precision
from cellconcepts.evaluate.probing import ProbeSettings
from cellconcepts.evaluate.selectivity import active_indicator, as_csr, avg_from_counts
from cellconcepts.evaluate.uncertainty import interval, unit_weights
from cellconcepts.variant import Variant

# The four variants of the paper's comparison, in the order pairs are formed (first - second).
VARIANT_ORDER = (("icfl", "pca"), ("icfl", "none"), ("topk", "pca"), ("topk", "none"))
MEAN_LABEL = "(mean over labels)"


def group_name(method: str, whitening: str) -> str:
    return f"{method}_{whitening}"


def score_samples(
    codes: sp.spmatrix,
    design: TaskDesign,
    chosen: Mapping[str, np.ndarray],
    weights: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per score, the (R, C) values of each label's ``chosen`` feature under R token
    ``weights`` (R, n): weighted avg selectivity on every labelled token (``insample_avg``)
    or on the test tokens (``heldout_*``), weighted average precision on the test tokens
    (``heldout_ap``). Chosen feature -1 gives NaN."""
    csr = as_csr(codes)
    active = active_indicator(csr)
    out = {}
    for score, features in chosen.items():
        rows = design.label_index >= 0
        if score != "insample_avg":
            rows &= design.side == TEST
        rows = np.flatnonzero(rows)
        if score == "heldout_ap":
            out[score] = chosen_feature_precision(
                csr[rows], features, design.label_index[rows], weights[:, rows]
            )
        else:
            out[score] = _selectivity_samples(active, design, features, rows, weights)
    return out


def _selectivity_samples(
    active: sp.csr_matrix,
    design: TaskDesign,
    features: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """(R, C) weighted avg selectivity of each label's feature on ``rows``: one (n x C*K)
    sparse matrix of (label, chosen feature) activity, multiplied by the weights."""
    n_labels = design.n_labels
    present = np.flatnonzero(features >= 0)
    unique, position = np.unique(features[present], return_inverse=True)
    k = unique.shape[0]
    out = np.full((weights.shape[0], n_labels), np.nan)
    if not k:
        return out
    block = active[rows][:, unique].tocoo()
    labels = design.label_index[rows]
    pairs = sp.csr_matrix(
        (block.data, (block.row, labels[block.row] * k + block.col)),
        shape=(rows.shape[0], n_labels * k),
    )
    w = weights[:, rows]
    counts = np.asarray((pairs.T @ w.T).T).reshape(-1, n_labels, k)
    mass = np.stack([np.bincount(labels, weights=r, minlength=n_labels) for r in w])
    avg = avg_from_counts(counts, mass)
    out[:, present] = avg[:, present, position]
    return out


@dataclass
class VariantSamples:
    """Per variant group (method, whitening, sparsity) and score: the seeds' point values
    (S, C) and their bootstrap samples (S, R, C), on one task's labels."""

    task: str
    labels: np.ndarray
    point: dict[tuple[str, str, int], dict[str, np.ndarray]]
    samples: dict[tuple[str, str, int], dict[str, np.ndarray]]


def variant_samples(
    codes: Mapping[str, sp.spmatrix],
    chosen: Mapping[str, Mapping[str, np.ndarray]],
    point: Mapping[str, Mapping[str, np.ndarray]],
    design: TaskDesign,
    units: np.ndarray,
    *,
    replicates: int,
    seed: int,
    chunk: int = 100,
) -> VariantSamples:
    """Bootstrap samples of every model's scores on one task (same unit draws for every
    model), grouped by variant: ``chosen[model][score]`` are the features and
    ``point[model][score]`` the values of `evaluate.label_scores`."""
    grouped: dict[tuple[str, str, int], list[str]] = {}
    for name in codes:
        spec = Variant.parse(name)
        grouped.setdefault((spec.method, spec.whitening, spec.sparsity), []).append(name)
    drawn: dict[str, dict[str, list[np.ndarray]]] = {
        name: {score: [] for score in SCORES} for name in codes
    }
    weights = unit_weights(units, replicates, seed)
    done = 0
    while done < replicates:
        size = min(chunk, replicates - done)
        w = np.stack([next(weights) for _ in range(size)])
        for name, matrix in codes.items():
            for score, values in score_samples(matrix, design, chosen[name], w).items():
                drawn[name][score].append(values)
        done += size
    samples = {
        key: {score: np.stack([np.concatenate(drawn[n][score]) for n in names]) for score in SCORES}
        for key, names in grouped.items()
    }
    points = {
        key: {score: np.stack([point[n][score] for n in names]) for score in SCORES}
        for key, names in grouped.items()
    }
    return VariantSamples(design.name, design.classes, points, samples)


def _seed_draws(n_seeds: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(R, S) seed indices drawn with replacement per replicate."""
    return rng.integers(0, n_seeds, size=(replicates, n_seeds))


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """The mean over ``axis`` ignoring NaN, NaN (without a warning) where all are NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _mean_over_labels(values: np.ndarray) -> np.ndarray:
    """The mean over the last axis (labels), NaN ignored: a label a variant could not score is
    NaN in every replicate, so a pair's difference (taken per label first) averages over the
    labels both variants score."""
    return nanmean(values, axis=-1)


def _seed_means(point: np.ndarray) -> np.ndarray:
    """(C,) mean over seeds of (S, C) seed values (NaN where no seed has one)."""
    return nanmean(point, axis=0)


def comparison_tables(
    found: VariantSamples, *, level: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(intervals, differences) for one task: per variant, label (and the mean over its
    labels) and score, the mean over seeds with its seed-and-unit interval and the seeds'
    sd; per pair of variants of equal sparsity, the difference per label and of the means
    over the labels both variants score, its interval and verdict."""
    rng = np.random.default_rng(seed)
    labels = np.append(found.labels, MEAN_LABEL)
    resampled: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    interval_rows = []
    for key, by_score in found.samples.items():
        n_seeds, replicates = next(iter(by_score.values())).shape[:2]
        draws = _seed_draws(n_seeds, replicates, rng)
        resampled[key] = {}
        for score, samples in by_score.items():
            picked = samples[draws, np.arange(replicates)[:, None]]  # (R, S, C)
            values = nanmean(picked, axis=1)  # (R, C)
            resampled[key][score] = values
            point = found.point[key][score]  # (S, C)
            per_seed = np.column_stack([point, _mean_over_labels(point)])
            low, high = interval(np.column_stack([values, _mean_over_labels(values)]), level)
            with warnings.catch_warnings():  # fewer than two seeds with a value: NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                sd = np.nanstd(per_seed, axis=0, ddof=1)
            interval_rows.append(
                pd.DataFrame(
                    {
                        "method": key[0],
                        "whitening": key[1],
                        "sparsity": key[2],
                        "n_seeds": n_seeds,
                        "task": found.task,
                        "label": labels,
                        "score": score,
                        "value": _seed_means(per_seed),
                        "low": low,
                        "high": high,
                        "seed_sd": sd,
                    }
                )
            )
    difference_rows = []
    for sparsity in sorted({key[2] for key in found.samples}):
        present = [v for v in VARIANT_ORDER if (*v, sparsity) in found.samples]
        for first, second in itertools.combinations(present, 2):
            a, b = (*first, sparsity), (*second, sparsity)
            for score in SCORES:
                point = _seed_means(found.point[a][score]) - _seed_means(found.point[b][score])
                diff = resampled[a][score] - resampled[b][score]
                low, high = interval(np.column_stack([diff, _mean_over_labels(diff)]), level)
                names = group_name(*first), group_name(*second)
                verdict = np.where(
                    low > 0,
                    f"{names[0]} higher",
                    np.where(high < 0, f"{names[1]} higher", "no difference"),
                )
                verdict = np.where(np.isnan(low) | np.isnan(high), "not compared", verdict)
                difference_rows.append(
                    pd.DataFrame(
                        {
                            "task": found.task,
                            "label": labels,
                            "score": score,
                            "sparsity": sparsity,
                            "first": names[0],
                            "second": names[1],
                            "difference": np.append(point, _mean_over_labels(point)),
                            "low": low,
                            "high": high,
                            "verdict": verdict,
                            "n_seeds_first": found.point[a][score].shape[0],
                            "n_seeds_second": found.point[b][score].shape[0],
                        }
                    )
                )
    intervals = pd.concat(interval_rows, ignore_index=True)
    differences = (
        pd.concat(difference_rows, ignore_index=True)
        if difference_rows
        else pd.DataFrame(columns=DIFFERENCE_COLUMNS)
    )
    return intervals, differences


# The tables' columns, written even when a dataset has one variant and so no pair.
DIFFERENCE_COLUMNS = [
    "task",
    "label",
    "score",
    "sparsity",
    "first",
    "second",
    "difference",
    "low",
    "high",
    "verdict",
    "n_seeds_first",
    "n_seeds_second",
]
PAIR_KEYS = ["task", "score", "sparsity", "first", "second"]
VERDICT_COLUMNS = [
    *PAIR_KEYS,
    "mean_difference",
    "low",
    "high",
    "verdict",
    "n_labels",
    "labels_first_higher",
    "labels_second_higher",
    "labels_no_difference",
]
CLAIM_COLUMNS = [
    *VERDICT_COLUMNS,
    "metric",
    "labels_above_null_first",
    "labels_above_null_second",
    "n_labels_task",
]


def verdict_counts(differences: pd.DataFrame) -> pd.DataFrame:
    """Per task, score, sparsity and pair: the mean difference over labels with its
    interval and verdict, and how many labels each verdict has."""
    keys = PAIR_KEYS
    per_label = differences[differences["label"] != MEAN_LABEL]
    mean = differences[differences["label"] == MEAN_LABEL].set_index(keys)
    rows = []
    for key, group in per_label.groupby(keys, sort=False):
        overall = mean.loc[key]
        verdicts = group["verdict"]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "mean_difference": overall["difference"],
                "low": overall["low"],
                "high": overall["high"],
                "verdict": overall["verdict"],
                "n_labels": int((verdicts != "not compared").sum()),
                "labels_first_higher": int((verdicts == f"{key[3]} higher").sum()),
                "labels_second_higher": int((verdicts == f"{key[4]} higher").sum()),
                "labels_no_difference": int((verdicts == "no difference").sum()),
            }
        )
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def chosen_and_points(
    scores: pd.DataFrame, task: str, classes: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """From one model's `label_scores` table: per score, the features chosen for each of
    ``classes`` of ``task`` (-1 where none) and their values (NaN where none)."""
    rows = scores[scores["task"] == task]
    chosen, points = {}, {}
    for score in SCORES:
        by_label = rows[rows["score"] == score]
        by_label = by_label.set_index(by_label["label"].astype(str)).reindex(list(classes))
        chosen[score] = by_label["feature"].fillna(-1).to_numpy(dtype=np.int64)
        points[score] = by_label["value"].to_numpy(dtype=np.float64)
    return chosen, points


# The paper's central claim, "ICFL and PCA improve the selectivity of extracted features
# compared to TopK SAEs": ICFL + PCA against TopK with the same whitening and against TopK as
# the paper trains it, without whitening.
CLAIM_PAIRS = (("icfl_pca", "topk_pca"), ("icfl_pca", "topk_none"))
CLAIM_METRICS = {
    "insample_avg": "the paper's metric (best avg selectivity, in-sample)",
    "heldout_avg": "held out (chosen on training, scored on test)",
    "heldout_avg_matched": "held out, at matched activation frequency",
    "heldout_ap": "average precision, held out (threshold-free)",
}


def claim_table(verdicts: pd.DataFrame, scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The central claim per task, sparsity and metric: the verdict of each pair of
    `CLAIM_PAIRS` (`verdict_counts`), beside the mean over seeds of how many labels each
    variant has above null with that score (``scores``: each model's `label_scores`)."""
    if verdicts.empty:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    above = []
    for name, table in scores.items():
        spec = Variant.parse(name)
        counts = table.groupby(["task", "score"])["above_null"].agg(["sum", "size"]).reset_index()
        counts["variant"] = group_name(spec.method, spec.whitening)
        counts["sparsity"] = spec.sparsity
        above.append(counts)
    above_null = (
        pd.concat(above).groupby(["task", "score", "sparsity", "variant"])[["sum", "size"]].mean()
    )
    rows = []
    for row in verdicts.to_dict("records"):
        if (row["first"], row["second"]) not in CLAIM_PAIRS:
            continue
        key = (row["task"], row["score"], row["sparsity"])
        first, second = above_null.loc[(*key, row["first"])], above_null.loc[(*key, row["second"])]
        rows.append(
            {
                **row,
                "metric": CLAIM_METRICS[row["score"]],
                "labels_above_null_first": first["sum"],
                "labels_above_null_second": second["sum"],
                "n_labels_task": int(first["size"]),
            }
        )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def task_comparisons(
    codes: Mapping[str, sp.spmatrix],
    scores: Mapping[str, pd.DataFrame],
    obs: pd.DataFrame,
    tasks: Sequence[Mapping[str, Any]],
    probe: ProbeSettings,
    *,
    units: np.ndarray,
    split_units: np.ndarray | None,
    bootstrap: Mapping[str, Any],
    min_label_size: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(intervals, differences) of `comparison_tables` over every task of ``tasks``: per
    model, its ``codes`` and its `label_scores` table (``scores``); ``bootstrap``:
    replicates, seed and level of the intervals."""
    interval_tables, difference_tables = [], []
    for task in tasks:
        design = task_design(obs, task, probe, split_units, min_label_size)
        chosen, points = {}, {}
        for name, frame in scores.items():
            chosen[name], points[name] = chosen_and_points(frame, task["name"], design.classes)
        found = variant_samples(
            codes,
            chosen,
            points,
            design,
            units,
            replicates=bootstrap["replicates"],
            seed=bootstrap["seed"],
        )
        task_intervals, task_differences = comparison_tables(
            found, level=bootstrap["level"], seed=bootstrap["seed"]
        )
        interval_tables.append(task_intervals)
        difference_tables.append(task_differences)
    return (
        pd.concat(interval_tables, ignore_index=True),
        pd.concat(difference_tables, ignore_index=True),
    )


def comparison_report(
    intervals: pd.DataFrame,
    differences: pd.DataFrame,
    scores: Mapping[str, pd.DataFrame],
    level: float,
) -> dict[str, tuple[pd.DataFrame, str]]:
    """The comparison's tables with their captions, by name: ``intervals`` and
    ``differences`` (`task_comparisons`), ``verdicts`` (`verdict_counts`) and ``claim``
    (`claim_table`; ``scores``: each model's `label_scores`)."""
    verdicts = verdict_counts(differences)
    shown = f"{100 * level:g} %"
    return {
        "intervals": (
            intervals,
            f"best-feature scores per variant (mean over seeds) with {shown} intervals "
            "over units and seeds",
        ),
        "differences": (
            differences,
            f"paired differences between variants with {shown} intervals over units and seeds",
        ),
        "verdicts": (verdicts, "verdicts per pair of variants"),
        "claim": (
            claim_table(verdicts, scores),
            "ICFL + PCA against TopK under each metric, over units and seeds",
        ),
    }


def verdict_lines(verdicts: pd.DataFrame) -> list[str]:
    """One sentence per row of `verdict_counts`: the pair's mean difference with its interval
    and verdict, and how many labels each verdict has."""
    return [
        f"{row.task}, {row.score}, k{row.sparsity}: {row.first} - {row.second} = "
        f"{row.mean_difference:.3f} [{row.low:.3f}, {row.high:.3f}], {row.verdict}; labels: "
        f"{row.labels_first_higher:d} / {row.labels_second_higher:d} higher, "
        f"{row.labels_no_difference:d} no difference"
        for row in verdicts.itertuples(index=False)
    ]
