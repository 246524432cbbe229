"""The in-process backend: segmentation of drawn cells, and measurements checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellconcepts.cellprofiler import cp_measure as cp_measure_backend
from cellconcepts.cellprofiler.segmentation import match_objects
from cellconcepts.sources import cellpainting

CHANNELS = list(cellpainting.CHANNELS)


def drawn_cells(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Three separated round cells with round nuclei: a (6, H, W) uint16 image and true labels."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.full((6, size, size), 600, dtype=np.uint16)
    truth = np.zeros((size, size), dtype=np.int32)
    for label, (cy, cx) in enumerate([(14, 14), (14, 46), (46, 30)], start=1):
        r = np.hypot(yy - cy, xx - cx)
        truth[r <= 10] = label
        image[:, r <= 10] += 8000
        image[0][r <= 4] += 20000  # nucleus channel
    return image, truth


def test_segmentation_finds_drawn_cells():
    image, truth = drawn_cells()
    unit = cp_measure_backend._as_unit(image)
    nuclei = cp_measure_backend.segment_nuclei(unit[0])
    cells = cp_measure_backend.segment_cells(nuclei, unit[1])
    assert nuclei.max() == 3
    match = match_objects(cells, truth)
    assert match.f1 == 1.0
    assert match.mean_iou > 0.75  # smoothing before the threshold moves edges by ~1 px
    # cell k holds nucleus k
    for label in range(1, 4):
        assert set(np.unique(cells[nuclei == label])) == {label}


def test_measurements_match_numpy():
    image, truth = drawn_cells()
    nuclei = np.where(np.isin(truth, [1, 2, 3]), truth, 0) * (image[0] > 20000)
    table = cp_measure_backend.measure_objects(
        image, {"Nuclei": nuclei.astype(np.int32), "Cells": truth}, CHANNELS
    )
    assert table.index.tolist() == [1, 2, 3]
    unit = image.astype(np.float64) / 65535
    for label in (1, 2, 3):
        inside = truth == label
        row = table.loc[label]
        assert row["Cells_AreaShape_Area"] == inside.sum()
        assert row["Nuclei_AreaShape_Area"] == (nuclei == label).sum()
        np.testing.assert_allclose(
            row["Cells_Intensity_MeanIntensity_Er"], unit[1][inside].mean(), rtol=1e-9
        )
        np.testing.assert_allclose(
            row["Cells_Intensity_IntegratedIntensity_Nucleus"], unit[0][inside].sum(), rtol=1e-9
        )
    assert not any("Location" in c or "Center" in c for c in table.columns)
    assert table.columns.is_unique
    pairs = [c for c in table.columns if c.startswith("Cells_Correlation_Correlation_")]
    assert len(pairs) == 15  # 6 channels, each unordered pair once
    assert any(c.startswith("Cells_Texture_") for c in table.columns)
    assert any(c.startswith("Cells_Correlation_Correlation_") for c in table.columns)
    assert not any(c.startswith("Nuclei_Texture_") for c in table.columns)


def test_measure_images_rows_and_masks():
    image, truth = drawn_cells()
    images = np.stack([image, image])
    cells, masks = cp_measure_backend.measure_images(
        images, ["a", "b"], [7, 8], CHANNELS, nucleus_channel="nucleus", cytoplasm_channel="er"
    )
    assert masks.shape == (2, 64, 64)
    assert cells.groupby("image_id").size().to_dict() == {"a": 3, "b": 3}
    assert cells.image_index.unique().tolist() == [7, 8]
    pd.testing.assert_frame_equal(
        cells[cells.image_id == "a"]
        .drop(columns=["image_id", "image_index"])
        .reset_index(drop=True),
        cells[cells.image_id == "b"]
        .drop(columns=["image_id", "image_index"])
        .reset_index(drop=True),
    )


def test_unknown_channel_is_named():
    image, _ = drawn_cells()
    with pytest.raises(ValueError, match="cytoplasm_channel: 'cyto'"):
        cp_measure_backend.measure_images(
            image[None], ["a"], [0], CHANNELS, nucleus_channel="nucleus", cytoplasm_channel="cyto"
        )
