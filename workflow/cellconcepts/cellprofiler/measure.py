"""Segment and measure one chunk of an image store with the configured backend: the real
CellProfiler (`headless`) or CellProfiler's measurement code in-process (`cp_measure`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cellconcepts.cellprofiler import headless
from cellconcepts.cellprofiler import schema as cpf
from cellconcepts.files import PathLike

log = logging.getLogger(__name__)


@dataclass
class Measurement:
    """One chunk's per-cell table, cell label images, backend and seconds taken."""

    cells: pd.DataFrame
    masks: np.ndarray
    backend: str
    seconds: float


def resolve_backend(backend: str, executable: str | None) -> tuple[str, str | None]:
    """('cellprofiler', executable) or ('cp_measure', None), as the config asks and the
    machine allows; `auto` takes CellProfiler when its executable is found."""
    found = headless.find_executable(executable)
    if backend == "cellprofiler" and found is None:
        where = executable or "`cellprofiler` on PATH"
        raise FileNotFoundError(
            f"cellprofiler.backend is 'cellprofiler' but {where} is not an executable; run "
            "scripts/install_cellprofiler.sh or set cellprofiler.backend: cp_measure"
        )
    if backend == "cp_measure" or found is None:
        return "cp_measure", None
    return "cellprofiler", found


def chunk_rows(n_images: int, n_chunks: int, chunk: int) -> np.ndarray:
    """Row indices of one of n_chunks contiguous, near-equal chunks."""
    return np.array_split(np.arange(n_images), n_chunks)[chunk]


def check_images(images: np.ndarray, rows: np.ndarray, ids: np.ndarray, where: PathLike) -> None:
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
    images: np.ndarray,
    ids: np.ndarray,
    rows: np.ndarray,
    settings: Mapping[str, Any],
    *,
    executable: str | None,
    work_dir: PathLike,
) -> Measurement:
    """Per-cell features and cell masks of ``images[rows]`` (``settings``: the config's
    cellprofiler section: backend, pipeline, channels, nucleus and cytoplasm channels)."""
    channels: Sequence[str] = list(settings["channels"])
    backend, found = resolve_backend(settings["backend"], executable)
    pixels = np.asarray(images[rows])
    start = time.perf_counter()
    if len(rows) == 0:
        cells = pd.DataFrame(columns=list(cpf.META_COLUMNS))
        masks = np.zeros((0, *images.shape[2:]), dtype=np.int32)
    elif backend == "cellprofiler":
        cells, masks = headless.measure_images(
            pixels,
            ids,
            rows,
            channels,
            executable=found,
            pipeline=settings["pipeline"],
            work_dir=work_dir,
            nucleus_channel=settings["nucleus_channel"],
            cytoplasm_channel=settings["cytoplasm_channel"],
        )
    else:
        from cellconcepts.cellprofiler import cp_measure

        cells, masks = cp_measure.measure_images(
            pixels,
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
    return Measurement(cells, masks, backend, seconds)
