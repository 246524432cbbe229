"""Per planted group of a screen: can the encoder (or CellProfiler) see it at all, and when it
can, does a dictionary isolate it, with which encoder and whitening, and by how much more
than the others (paired bootstrap intervals)?

"Sees" means the out-of-fold linear probe recalls the group above chance with its whole
interval (`evaluate.ceilings.task_ceilings`); "isolates" is the best avg selectivity of any
feature, read against the group's ceilings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.config import Variant
from cellconcepts.evaluate.ceilings import out_of_fold_scores, scored_recalls
from cellconcepts.evaluate.probing import ProbeSettings
from cellconcepts.evaluate.uncertainty import best_selectivity_samples

log = logging.getLogger(__name__)

# (first, second): the comparisons the demo must answer, as (method, whitening) pairs.
COMPARISONS = ((("icfl", "pca"), ("topk", "pca")), (("icfl", "pca"), ("icfl", "none")))


def comparisons(variants: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of variant names of `COMPARISONS` with the same sparsity and seed."""
    specs = {name: Variant.parse(name) for name in variants}
    pairs = []
    for first, second in COMPARISONS:
        for a, sa in specs.items():
            if (sa.method, sa.whitening) != first:
                continue
            for b, sb in specs.items():
                same = (sb.sparsity, sb.seed) == (sa.sparsity, sa.seed)
                if (sb.method, sb.whitening) == second and same:
                    pairs.append((a, b))
    return pairs


def probe_recalls(
    features,
    labels: pd.Series,
    groups: pd.Series | None,
    units: np.ndarray,
    *,
    probe: ProbeSettings,
    folds: int,
    bootstrap: Mapping[str, Any],
) -> pd.DataFrame:
    """Out-of-fold probe recall per label with its bootstrap interval (label, recall, low,
    high; the 'BTA' row is the balanced accuracy)."""
    rows, classes, scores = out_of_fold_scores(
        features, labels, groups=groups, probe=probe, folds=folds
    )
    return scored_recalls(labels, rows, classes, scores, units, **bootstrap)


def group_detectability(
    labels: pd.Series,
    codes: Mapping[str, sp.spmatrix],
    ceilings: pd.DataFrame,
    units: np.ndarray,
    *,
    exclude: Sequence[str],
    bootstrap: Mapping[str, Any],
    profile_recall: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Three tables over the labels of one task (``exclude`` left out of the rows, not of the
    selectivities):

    - groups: per label, the raw-token probe's recall (from ``ceilings``) and CellProfiler's
      (``profile_recall``) with intervals, whether each sees it, its oracle and probe
      ceilings, and every model's best avg selectivity;
    - intervals: per model and label, best avg selectivity with its interval;
    - differences: per comparison pair and label, the paired difference, its interval, a
      verdict, and whether the encoder sees the label.
    """
    samples = best_selectivity_samples(codes, labels, units, **bootstrap)
    intervals = samples.table()
    keep = ~np.isin(samples.labels, list(exclude))
    shown = samples.labels[keep]
    limits = ceilings.set_index(ceilings["label"].astype(str)).reindex(shown)
    groups = pd.DataFrame({"label": shown, "n_tokens": limits["n_tokens"].to_numpy()})
    groups["chance"] = limits["chance"].to_numpy()
    groups["raw_probe_recall"] = limits["probe_recall"].to_numpy()
    groups["raw_probe_low"] = limits["probe_recall_low"].to_numpy()
    groups["raw_probe_high"] = limits["probe_recall_high"].to_numpy()
    groups["encoder_sees"] = groups["raw_probe_low"] > groups["chance"]
    if profile_recall is not None:
        cp = profile_recall.set_index("label").reindex(shown)
        groups["cp_probe_recall"] = cp["recall"].to_numpy()
        groups["cp_probe_low"] = cp["low"].to_numpy()
        groups["cp_probe_high"] = cp["high"].to_numpy()
        groups["cellprofiler_sees"] = groups["cp_probe_low"] > groups["chance"]
    groups["oracle_ceiling"] = limits["oracle_ceiling"].to_numpy()
    groups["probe_ceiling"] = limits["probe_ceiling"].to_numpy()
    for name, point in samples.point.items():
        groups[f"best_{name}"] = point[keep]
    sees = dict(zip(groups["label"], groups["encoder_sees"], strict=True))
    differences = []
    for first, second in comparisons(list(codes)):
        table = samples.difference(first, second)
        table = table[table["label"].isin(shown)].copy()
        table["encoder_sees"] = table["label"].map(sees)
        differences.append(table)
    difference_table = (
        pd.concat(differences, ignore_index=True)
        if differences
        else pd.DataFrame(columns=["label", "first", "second", "difference", "low", "high"])
    )
    return groups, intervals[intervals["label"].isin(shown)], difference_table


def summary_lines(groups: pd.DataFrame, differences: pd.DataFrame) -> list[str]:
    """The demo's answer in plain sentences, one per group."""
    lines = []
    for row in groups.itertuples(index=False):
        seen = "the encoder sees it" if row.encoder_sees else "the encoder does not see it"
        verdicts = differences.loc[differences["label"] == row.label, "verdict"].tolist()
        lines.append(
            f"{row.label}: raw probe recall {row.raw_probe_recall:.2f} "
            f"[{row.raw_probe_low:.2f}, {row.raw_probe_high:.2f}] vs chance {row.chance:.2f}, "
            f"{seen}; " + ("; ".join(verdicts) if verdicts else "no pair to compare")
        )
    return lines
