"""Per planted group of a screen: can the encoder (or CellProfiler) see it at all, and does a
dictionary isolate it on held-out tokens, above what chance gives?

"Sees" means the out-of-fold linear probe recalls the group above chance with its whole
interval (`evaluate.references.task_references`); "isolates" is the held-out best avg
selectivity of each variant (mean over its seeds) and the fraction of its seeds whose
held-out best feature is above the permutation null (`evaluate.label_scores`), read beside
the group's oracle selectivity and linear reference. The comparisons between variants are
`evaluate.variant_comparison`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cellconcepts.evaluate.probing import ProbeSettings
from cellconcepts.evaluate.references import fold_groups, out_of_fold, scored_recalls
from cellconcepts.evaluate.uncertainty import split_units, unit_codes
from cellconcepts.variant import Variant

log = logging.getLogger(__name__)


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
    found = out_of_fold(features, labels, groups=groups, probe=probe, folds=folds)
    return scored_recalls(labels, found, units, **bootstrap)


def profile_recalls(
    matrix: np.ndarray,
    obs: pd.DataFrame,
    task: Mapping[str, Any],
    labels: pd.Series,
    *,
    resample_unit: Sequence[str],
    probe: ProbeSettings,
    folds: int,
    bootstrap: Mapping[str, Any],
) -> pd.DataFrame:
    """`probe_recalls` of CellProfiler: a probe on the per-image profile ``matrix`` (in the
    rows of the token store ``obs``: `cellprofiler.profiles.aligned_profiles`), folds as for
    the linear reference (`evaluate.references.fold_groups`), intervals over
    ``resample_unit``."""
    return probe_recalls(
        matrix,
        labels,
        fold_groups(obs, task, split_units(obs, list(resample_unit))),
        unit_codes(obs, list(resample_unit)),
        probe=probe,
        folds=folds,
        bootstrap=bootstrap,
    )


def shown_labels(labels: pd.Series, exclude: Sequence[str]) -> list[str]:
    """The task's labels (as text, sorted) less those of ``exclude``."""
    return sorted(set(labels.dropna().astype(str)) - {str(v) for v in exclude})


def task_detectability(
    labels: pd.Series,
    exclude: Sequence[str],
    scores: Mapping[str, pd.DataFrame],
    references: pd.DataFrame,
    task: str,
    *,
    profile_recall: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`group_detectability` of the labels of ``task`` but ``exclude`` (`shown_labels`), read
    from the references of every task (`evaluate.references.task_references`)."""
    return group_detectability(
        shown_labels(labels, exclude),
        scores,
        references[references["task"] == task],
        task,
        profile_recall=profile_recall,
    )


def group_detectability(
    labels: Sequence[str],
    scores: Mapping[str, pd.DataFrame],
    references: pd.DataFrame,
    task: str,
    *,
    profile_recall: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per label of ``labels`` (the task's labels to show): the raw-token probe's recall
    (from ``references``) and CellProfiler's (``profile_recall``) with intervals, whether
    each sees it, its oracle selectivity and linear reference, and per variant (method,
    whitening, sparsity) the held-out best selectivity (mean over seeds) and the fraction of
    seeds above null (``scores``: each model's `label_scores` table)."""
    shown = list(labels)
    limits = references.set_index(references["label"].astype(str)).reindex(shown)
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
    for column in ("oracle_selectivity", "linear_reference", "linear_reference_low"):
        groups[column] = limits[column].to_numpy()
    heldout = []
    for name, table in scores.items():
        spec = Variant.parse(name)
        rows = table[(table["task"] == task) & (table["score"] == "heldout_avg")]
        rows = rows.set_index(rows["label"].astype(str)).reindex(shown)
        heldout.append(
            pd.DataFrame(
                {
                    "variant": spec.setting,
                    "label": shown,
                    "value": rows["value"].to_numpy(),
                    "above": rows["above_null"].astype(float).to_numpy(),
                }
            )
        )
    per_variant = pd.concat(heldout).groupby(["variant", "label"], sort=False).mean()
    for variant in per_variant.index.get_level_values("variant").unique():
        part = per_variant.loc[variant].reindex(shown)
        groups[f"heldout_{variant}"] = part["value"].to_numpy()
        groups[f"above_null_{variant}"] = part["above"].to_numpy()
    return groups


def summary_lines(groups: pd.DataFrame) -> list[str]:
    """The demo's answer in plain sentences, one per group."""
    lines = []
    variants = [c.removeprefix("heldout_") for c in groups.columns if c.startswith("heldout_")]
    for row in groups.to_dict("records"):
        seen = "the encoder sees it" if row["encoder_sees"] else "the encoder does not see it"
        parts = [
            f"{v} {row['heldout_' + v]:.2f} ({row['above_null_' + v]:.0%} of seeds above null)"
            for v in variants
        ]
        lines.append(
            f"{row['label']}: raw probe recall {row['raw_probe_recall']:.2f} "
            f"[{row['raw_probe_low']:.2f}, {row['raw_probe_high']:.2f}] vs chance "
            f"{row['chance']:.2f}, {seen}; held-out best selectivity: " + "; ".join(parts)
        )
    return lines
