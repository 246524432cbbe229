"""Stages of the CellProfiler baseline (workflow/rules/cellprofiler.smk): measure, scattered
over image chunks; per-image profiles; quantile thresholding into sparse codes; segmentation
quality against the simulator's masks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts import (
    cellprofiler,
    cp_features,
    cp_measure_backend,
    evaluate,
    io,
    profiles,
    quantile_threshold,
    segmentation_quality,
)
from cellconcepts.image_store import open_image_store
from cellconcepts.pipeline import task_labels

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def resolve_backend(settings: Mapping[str, Any]) -> tuple[str, str | None]:
    """('cellprofiler', executable) or ('cp_measure', None), as the config asks and the
    machine allows; `auto` takes CellProfiler when its executable is found."""
    backend = settings["backend"]
    executable = cellprofiler.find_executable(settings.get("executable"))
    if backend == "cellprofiler" and executable is None:
        where = settings.get("executable") or "`cellprofiler` on PATH"
        raise FileNotFoundError(
            f"cellprofiler.backend is 'cellprofiler' but {where} is not an executable; run "
            "scripts/install_cellprofiler.sh or set cellprofiler.backend: cp_measure"
        )
    if backend == "cp_measure" or executable is None:
        return "cp_measure", None
    return "cellprofiler", executable


def chunk_rows(n_images: int, n_chunks: int, chunk: int) -> np.ndarray:
    """Row indices of one of n_chunks contiguous, near-equal chunks."""
    return np.array_split(np.arange(n_images), n_chunks)[chunk]


def _check_images(images: np.ndarray, rows: np.ndarray, ids: np.ndarray, where: Path) -> None:
    """A corrupt image (non-finite pixels, or a blank channel) is named by its row and id."""
    for row, image_id in zip(rows, ids, strict=True):
        image = np.asarray(images[row])
        if not np.isfinite(image).all():
            raise ValueError(f"{where}: image {row} ({image_id}) holds non-finite pixels")
        blank = [c for c in range(image.shape[0]) if np.ptp(image[c]) == 0]
        if blank:
            raise ValueError(
                f"{where}: image {row} ({image_id}) has blank channels {blank} "
                "(one value everywhere); expected a microscopy image"
            )


def measure_chunk(
    image_dir: PathLike,
    chunk: int,
    n_chunks: int,
    settings: Mapping[str, Any],
    *,
    cells_path: PathLike,
    masks_path: PathLike,
    timing_path: PathLike,
    work_dir: PathLike,
) -> None:
    """Segment and measure one chunk of the image store with the configured backend."""
    store = open_image_store(image_dir)
    channels = list(settings["channels"])
    if store.images.shape[1] != len(channels):
        raise ValueError(
            f"cellprofiler.channels names {len(channels)} channels but "
            f"{Path(image_dir) / 'images.npy'} has {store.images.shape[1]}"
        )
    rows = chunk_rows(len(store.obs), n_chunks, chunk)
    ids = store.obs["image_id"].astype(str).to_numpy()[rows]
    _check_images(store.images, rows, ids, Path(image_dir) / "images.npy")
    backend, executable = resolve_backend(settings)
    images = np.asarray(store.images[rows])
    start = time.perf_counter()
    if len(rows) == 0:
        cells, masks = (
            pd.DataFrame(columns=list(cp_features.META_COLUMNS)),
            np.zeros((0, *store.images.shape[2:]), dtype=np.int32),
        )
    elif backend == "cellprofiler":
        cells, masks = cellprofiler.measure_images(
            images,
            ids,
            rows,
            channels,
            executable=executable,
            pipeline=settings["pipeline"],
            work_dir=work_dir,
            nucleus_channel=settings["nucleus_channel"],
            cytoplasm_channel=settings["cytoplasm_channel"],
        )
    else:
        cells, masks = cp_measure_backend.measure_images(
            images,
            ids,
            rows,
            channels,
            nucleus_channel=settings["nucleus_channel"],
            cytoplasm_channel=settings["cytoplasm_channel"],
        )
    seconds = time.perf_counter() - start
    log.info(
        "%s: %d images, %d cells, %d columns in %.1f s (%.3f s per image)",
        backend,
        len(rows),
        len(cells),
        cells.shape[1],
        seconds,
        seconds / max(len(rows), 1),
    )
    with io.atomic_path(masks_path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, masks)
    with io.atomic_path(timing_path) as tmp:
        Path(tmp).write_text(
            json.dumps({"backend": backend, "n_images": len(rows), "seconds": seconds})
        )
    with io.atomic_path(cells_path) as tmp:
        cells.to_parquet(tmp, index=False)


def build_profiles(
    cells_paths: Sequence[PathLike],
    timing_paths: Sequence[PathLike],
    image_dir: PathLike,
    *,
    how: str,
    profiles_path: PathLike,
    summary_path: PathLike,
) -> None:
    """Per-image profiles (mean or median over cells) in image-store order, and a summary."""
    store = open_image_store(image_dir)
    cells = pd.concat([pd.read_parquet(p) for p in cells_paths], ignore_index=True)
    cells["image_id"] = cells["image_id"].astype(str)
    feature_columns = [c for c in cells.columns if c not in cp_features.META_COLUMNS]
    table, report = profiles.image_profiles(
        cells, store.obs["image_id"].astype(str).tolist(), how=how, feature_columns=feature_columns
    )
    timings = [json.loads(Path(p).read_text()) for p in timing_paths]
    backends = {t["backend"] for t in timings if t["n_images"]}
    if len(backends) > 1:
        raise ValueError(
            f"chunks {list(timing_paths)} were measured by different backends {sorted(backends)}; "
            "set cellprofiler.backend explicitly and re-run cellprofiler_measure"
        )
    n_images = sum(t["n_images"] for t in timings)
    seconds = sum(t["seconds"] for t in timings)
    summary = {
        "backend": backends.pop() if backends else timings[0]["backend"],
        "n_images": n_images,
        "n_cells": len(cells),
        "seconds_per_image": seconds / max(n_images, 1),
        "aggregate": how,
        "n_features_measured": report.n_features_in,
        "n_dropped_nan": report.n_dropped_nan,
        "n_dropped_constant": report.n_dropped_constant,
        "n_features": table.shape[1] - 1,
        "n_images_without_cells": report.n_images_without_cells,
    }
    log.info("profiles: %s", summary)
    pd.DataFrame([summary]).to_csv(summary_path, index=False)
    with io.atomic_path(profiles_path) as tmp:
        table.to_parquet(tmp, index=False)


def _aligned_profiles(profiles_path: PathLike, obs: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Profile rows in token-store order (the store's token_id is the image_id)."""
    table = pd.read_parquet(profiles_path).set_index("image_id")
    ids = obs["token_id"].astype(str)
    missing = ids[~ids.isin(table.index)]
    if len(missing):
        raise ValueError(
            f"{profiles_path}: no profile for tokens {missing.head(5).tolist()}; the token "
            "store and the image store must hold the same images"
        )
    return table.loc[ids].to_numpy(np.float64), list(table.columns)


def reference_rows(obs: pd.DataFrame, reference: str) -> np.ndarray:
    """Rows whose distribution defines the quantiles: control images or all images."""
    if reference == "all":
        return np.ones(len(obs), dtype=bool)
    mask = obs["is_control"].to_numpy(bool)
    if mask.sum() < 2:
        raise ValueError(
            f"cellprofiler.reference is 'controls' but the token store has {int(mask.sum())} "
            "control rows; at least 2 are needed"
        )
    return mask


def mean_best_selectivity(codes: sp.csr_matrix, labels: pd.Series) -> float:
    """Mean over labels of the best avg selectivity of any feature."""
    sel = evaluate.selectivity(codes, labels)
    return float(sel.avg.max(axis=1).mean())


def nearest_alpha(matrix: np.ndarray, reference: np.ndarray, target: float) -> float:
    """Alpha for the target mean active count; where no alpha reaches it, the alpha of the
    nearest reachable count, with a warning (images far outside the reference range are
    active at any alpha, which sets a floor)."""
    try:
        return quantile_threshold.alpha_for_target(matrix, reference, target)
    except quantile_threshold.UnreachableTargetError as error:
        low = quantile_threshold.mean_active(matrix, reference, quantile_threshold.ALPHA_MIN)
        alpha = quantile_threshold.ALPHA_MIN if target < low else quantile_threshold.ALPHA_MAX
        log.warning("cellprofiler.target_active: %s; using alpha %.3g instead", error, alpha)
        return alpha


def threshold_stage(
    profiles_path: PathLike,
    store_dir: PathLike,
    *,
    reference: str,
    target: float,
    sweep_targets: Sequence[float],
    task: Mapping[str, Any],
    codes_path: PathLike,
    thresholds_path: PathLike,
    sweep_path: PathLike,
) -> None:
    """Codes at the target mean active count (alpha by bisection), and the sweep over targets
    with the mean best avg selectivity on the comparison task."""
    store = io.TokenStore.open(store_dir)
    matrix, names = _aligned_profiles(profiles_path, store.obs)
    ref = reference_rows(store.obs, reference)
    alpha = nearest_alpha(matrix, ref, target)
    lower, upper = quantile_threshold.quantile_bounds(matrix, ref, alpha)
    codes = quantile_threshold.activation(matrix, lower, upper)
    mean_active = codes.nnz / codes.shape[0]
    log.info(
        "alpha %.4g gives %.2f active features per image (target %g) of %d",
        alpha,
        mean_active,
        target,
        len(names),
    )
    with io.atomic_path(codes_path) as tmp, open(tmp, "wb") as handle:
        sp.save_npz(handle, codes.tocsr())
    pd.DataFrame({"feature": names, "lower": lower, "upper": upper}).assign(
        alpha=alpha, target=target, mean_active=mean_active
    ).to_csv(thresholds_path, index=False)
    labels = task_labels(store.obs, task)
    rows = []
    for point in sorted(set(sweep_targets) | {target}):
        swept_alpha = nearest_alpha(matrix, ref, point)
        if any(row["alpha"] == swept_alpha for row in rows):
            continue  # an unreachable target fell back onto a point already listed
        swept = quantile_threshold.activation(
            matrix, *quantile_threshold.quantile_bounds(matrix, ref, swept_alpha)
        )
        rows.append(
            {
                "method": "CellProfiler",
                "target": point,
                "alpha": swept_alpha,
                "mean_active": swept.nnz / swept.shape[0],
                "mean_best_avg": mean_best_selectivity(swept, labels),
            }
        )
    pd.DataFrame(rows).to_csv(sweep_path, index=False)


def segmentation_stage(
    masks_paths: Sequence[PathLike],
    image_dir: PathLike,
    *,
    iou_threshold: float,
    per_image_path: PathLike,
    summary_path: PathLike,
) -> None:
    """Object F1 and mean IoU of the baseline's cells against the simulator's masks."""
    store = open_image_store(image_dir)
    if store.masks is None:
        raise FileNotFoundError(f"{image_dir}: no masks.npy; segmentation quality needs them")
    predicted = np.concatenate([np.load(p) for p in masks_paths])
    per_image, summary = segmentation_quality.segmentation_quality(
        predicted,
        np.asarray(store.masks),
        store.obs["image_id"].astype(str).tolist(),
        iou_threshold=iou_threshold,
    )
    log.info("segmentation: %s", summary)
    per_image.to_csv(per_image_path, index=False)
    pd.DataFrame([{"iou_threshold": iou_threshold, **summary}]).to_csv(summary_path, index=False)
