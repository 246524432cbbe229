"""Stages of workflow/rules/cellprofiler.smk, the CellProfiler baseline: measure (scattered over
image chunks), per-image profiles, quantile thresholding into sparse codes, their selectivity,
the comparison with the dictionaries, and segmentation quality against the simulator's masks.

`cellprofiler_measure` runs in the CellProfiler environment: this module imports only what that
environment has at the top, the rest inside the stages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellconcepts.files import PathLike, atomic_path, read_results_csv, write_frame
from cellconcepts.store.images import open_image_store
from cellconcepts.store.layout import ImageFiles

log = logging.getLogger(__name__)


def cellprofiler_measure(
    *,
    images: PathLike,
    image_obs: PathLike,
    cells: PathLike,
    masks: PathLike,
    timing: PathLike,
    settings: Mapping[str, Any],
    chunk: int,
    n_chunks: int,
    work_dir: PathLike,
    execution: Mapping[str, Any],
    pipeline: PathLike | None = None,
) -> None:
    """Segment and measure one chunk of the image store with the configured backend
    (``pipeline``: the `.cppipe` the real CellProfiler runs, an input only where it may)."""
    from cellconcepts.cellprofiler.measure import check_images, chunk_rows, measure_chunk

    store = open_image_store(ImageFiles(Path(images), Path(image_obs)))
    channels = list(settings["channels"])
    if store.images.shape[1] != len(channels):
        raise ValueError(
            f"cellprofiler.channels names {len(channels)} channels but {images} has "
            f"{store.images.shape[1]}"
        )
    rows = chunk_rows(len(store.obs), n_chunks, chunk)
    ids = store.obs["image_id"].astype(str).to_numpy()[rows]
    check_images(store.images, rows, ids, images)
    if pipeline is not None:
        settings = {**settings, "pipeline": str(pipeline)}
    result = measure_chunk(
        store.images, ids, rows, settings, executable=execution["executable"], work_dir=work_dir
    )
    with atomic_path(masks) as tmp, open(tmp, "wb") as handle:
        np.save(handle, result.masks)
    with atomic_path(timing) as tmp:
        tmp.write_text(
            json.dumps(
                {"backend": result.backend, "n_images": len(rows), "seconds": result.seconds}
            )
        )
    write_frame(result.cells, cells)


def cellprofiler_profiles(
    *,
    image_obs: PathLike,
    cells: Sequence[PathLike],
    timing: Sequence[PathLike],
    profiles: PathLike,
    summary: PathLike,
    aggregate: str,
) -> None:
    """Per-image profiles (mean or median over cells) in image-store order, and a summary of
    the measurement (backend, cells, seconds per image, features kept and dropped)."""
    from cellconcepts.cellprofiler import schema
    from cellconcepts.cellprofiler.profiles import image_profiles, measurement_summary

    image_ids = pd.read_parquet(image_obs)["image_id"].astype(str).tolist()
    per_cell = pd.concat([pd.read_parquet(p) for p in cells], ignore_index=True)
    per_cell["image_id"] = per_cell["image_id"].astype(str)
    feature_columns = [c for c in per_cell.columns if c not in schema.META_COLUMNS]
    table, report = image_profiles(
        per_cell, image_ids, how=aggregate, feature_columns=feature_columns
    )
    timings = [json.loads(Path(p).read_text()) for p in timing]
    row = measurement_summary(timings, len(per_cell), aggregate, report, table.shape[1] - 1)
    log.info("profiles: %s", row)
    write_frame(pd.DataFrame([row]), summary)
    write_frame(table, profiles)


def cellprofiler_threshold(
    *,
    obs: PathLike,
    profiles: PathLike,
    codes: PathLike,
    thresholds: PathLike,
    sweep: PathLike,
    reference: str,
    target_active: float,
    sweep_targets: Sequence[float],
    task: Mapping[str, Any],
    min_label_size: int = 1,
) -> None:
    """Codes at the target mean active count (alpha by bisection), and the sweep over targets
    with the mean best avg selectivity on the comparison task."""
    import scipy.sparse as sp

    from cellconcepts.cellprofiler.profiles import aligned_profiles
    from cellconcepts.cellprofiler.thresholds import threshold_profiles

    table = pd.read_parquet(obs)
    matrix, names = aligned_profiles(pd.read_parquet(profiles), table, str(profiles))
    result = threshold_profiles(
        matrix,
        names,
        table,
        reference=reference,
        target_active=target_active,
        sweep_targets=sweep_targets,
        task=task,
        min_label_size=min_label_size,
    )
    with atomic_path(codes) as tmp, open(tmp, "wb") as handle:
        sp.save_npz(handle, result.codes)
    write_frame(result.thresholds, thresholds)
    write_frame(result.sweep, sweep)


def cellprofiler_selectivity(
    *,
    obs: PathLike,
    codes: PathLike,
    counts: PathLike,
    best: PathLike,
    label_scores: PathLike,
    tasks: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float],
    probe: Mapping[str, Any],
    significance: Mapping[str, Any],
    resample_unit: Sequence[str] = (),
    min_label_size: int = 1,
) -> None:
    """Selectivity of the thresholded CellProfiler features, as for a dictionary's codes: the
    paper's best score per label, and the held-out scores against their nulls (a best of
    ~800 measurements is a maximum too)."""
    from cellconcepts.stages.evaluate import selectivity

    selectivity(
        obs=obs,
        codes=codes,
        counts=counts,
        best=best,
        label_scores=label_scores,
        tasks=tasks,
        thresholds=thresholds,
        probe=probe,
        significance=significance,
        resample_unit=resample_unit,
        min_label_size=min_label_size,
    )


def cellprofiler_comparison(
    *,
    cp_best: PathLike,
    sweep: PathLike,
    best: Sequence[PathLike],
    codes: Sequence[PathLike],
    per_label: Sequence[PathLike],
    correlation: Sequence[PathLike],
    sparsity: Sequence[PathLike],
    figure: Sequence[PathLike],
    variants: Sequence[str],
    task: str,
) -> None:
    """Paper Fig. 2: per-label best avg selectivity of CellProfiler and every dictionary, their
    Pearson r with a 95% CI, and selectivity against sparsity."""
    import scipy.sparse as sp

    from cellconcepts.cellprofiler import comparison as cmp
    from cellconcepts.report.tables import write_table

    cp_sweep = pd.read_csv(sweep)
    result = cmp.compare_with_dictionaries(
        read_results_csv(cp_best),
        {v: read_results_csv(p) for v, p in zip(variants, best, strict=True)},
        {v: sp.load_npz(p) for v, p in zip(variants, codes, strict=True)},
        cp_sweep,
        task,
    )
    write_table(result.per_label, per_label[0], caption=f"Best avg selectivity per {task} label")
    write_table(
        result.correlations,
        correlation[0],
        caption=f"Pearson r of per-{task} best avg selectivity, CellProfiler vs dictionaries",
    )
    write_table(
        result.curve, sparsity[0], caption="Mean best avg selectivity against mean active count"
    )
    cmp.plot_comparison(
        result.per_label,
        result.correlations,
        cp_sweep,
        result.points,
        figure[0],
        title=f"CellProfiler vs dictionary features ({task} task)",
    )


def cellprofiler_segmentation(
    *,
    images: PathLike,
    image_obs: PathLike,
    true_masks: PathLike,
    masks: Sequence[PathLike],
    per_image: PathLike,
    summary: PathLike,
    iou_threshold: float,
) -> None:
    """Object F1 and mean IoU of the baseline's cells against the simulator's masks."""
    from cellconcepts.cellprofiler.segmentation import segmentation_quality

    store = open_image_store(ImageFiles(Path(images), Path(image_obs), masks=Path(true_masks)))
    predicted = np.concatenate([np.load(p) for p in masks])
    table, result = segmentation_quality(
        predicted,
        np.asarray(store.masks),
        store.obs["image_id"].astype(str).tolist(),
        iou_threshold=iou_threshold,
    )
    log.info("segmentation: %s", result)
    write_frame(table, per_image)
    write_frame(pd.DataFrame([{"iou_threshold": iou_threshold, **result}]), summary)
