"""Token heatmaps and the single-cell check, on hand-built tokens, images and masks."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cellconcepts.microscopy import figures, heatmaps, single_cell

CHANNELS = ["nucleus", "ER", "RNA", "actin", "Golgi/membrane", "mitochondria"]


# --------------------------------------------------------------------------- alignment


def test_patch_alignment_hand_made_tokens() -> None:
    direction = np.array([0.0, 3.0, 4.0])
    centre = np.array([1.0, 2.0, 3.0])
    offsets = [
        2 * direction,  # along the direction -> 1
        -direction,  # against it -> -1
        np.array([5.0, 0.0, 0.0]),  # orthogonal -> 0
        np.array([0.0, 4.0, -3.0]),  # orthogonal -> 0
        np.zeros(3),  # equal to the centre -> 0
        np.array([0.0, 3.0, 0.0]),  # cos = 9 / (3 * 5)
    ]
    tokens = (centre + np.array(offsets)).reshape(1, 2, 3, 3).astype(np.float32)

    heat = heatmaps.patch_alignment(tokens, direction, centre)

    assert heat.shape == (1, 2, 3)
    np.testing.assert_allclose(heat.ravel(), [1.0, -1.0, 0.0, 0.0, 0.0, 0.6], atol=1e-12)


def test_patch_alignment_rejects_bad_direction() -> None:
    tokens = np.ones((1, 2, 2, 3))
    with pytest.raises(ValueError, match="direction: expected shape"):
        heatmaps.patch_alignment(tokens, np.ones(4), np.zeros(3))
    with pytest.raises(ValueError, match="non-zero"):
        heatmaps.patch_alignment(tokens, np.zeros(3), np.zeros(3))


def test_pool_and_upsample_by_hand() -> None:
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_allclose(heatmaps.pool_to_patches(image, 2), [[[2.5, 4.5], [10.5, 12.5]]])
    heat = np.array([[1.0, 2.0], [3.0, 4.0]])
    expected = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], dtype=np.float64)
    np.testing.assert_array_equal(heatmaps.upsample_to_pixels(heat, 2), expected)
    np.testing.assert_array_equal(
        heatmaps.upsample_to_pixels(np.stack([heat, -heat]), 2), np.stack([expected, -expected])
    )
    with pytest.raises(ValueError, match="multiples of the patch size 3"):
        heatmaps.pool_to_patches(image, 3)


def test_pool_inverts_upsample_for_block_constant_images() -> None:
    grid = np.random.default_rng(0).normal(size=(6, 3, 5))
    image = heatmaps.upsample_to_pixels(grid, 4)
    assert image.shape == (6, 12, 20)
    np.testing.assert_allclose(heatmaps.pool_to_patches(image, 4), grid, rtol=1e-12)
    np.testing.assert_array_equal(
        heatmaps.upsample_to_pixels(heatmaps.pool_to_patches(image, 4), 4), image
    )


# --------------------------------------------------------------------------- channels


def _pooled_by_loops(image: np.ndarray, patch: int) -> np.ndarray:
    channels, height, width = image.shape
    out = np.zeros((channels, height // patch, width // patch))
    for c in range(channels):
        for i in range(height // patch):
            for j in range(width // patch):
                out[c, i, j] = image[
                    c, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch
                ].mean()
    return out


def test_channel_correlations_match_corrcoef_on_pooled_values() -> None:
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 100.0, size=(6, 12, 12)).astype(np.uint16)
    heat = rng.normal(size=(3, 3))
    pooled = _pooled_by_loops(image.astype(np.float64), 4)
    expected = [np.corrcoef(heat.ravel(), pooled[c].ravel())[0, 1] for c in range(6)]

    np.testing.assert_allclose(heatmaps.channel_correlations(heat, image, 4), expected, rtol=1e-10)

    from_channel_3 = heatmaps.channel_correlations(pooled[3], image, 4)
    assert from_channel_3[3] == pytest.approx(1.0, abs=1e-12)
    assert np.argmax(from_channel_3) == 3


def test_channel_correlations_nan_when_constant() -> None:
    image = np.random.default_rng(2).normal(size=(2, 4, 4))
    image[1] = 7.0
    r = heatmaps.channel_correlations(np.array([[0.0, 1.0], [2.0, 5.0]]), image, 2)
    assert np.isfinite(r[0]) and np.isnan(r[1])
    assert np.isnan(heatmaps.channel_correlations(np.ones((2, 2)), image, 2)).all()
    with pytest.raises(ValueError, match="patch grid"):
        heatmaps.channel_correlations(np.ones((3, 3)), image, 2)


def test_channel_correlation_table_top_channels() -> None:
    rng = np.random.default_rng(3)
    images = rng.normal(size=(3, 6, 8, 8))
    pooled = [_pooled_by_loops(image, 2) for image in images]
    heats = np.stack(
        [
            pooled[0][3],  # exactly channel 3: r = 1
            -pooled[1][1] + 0.01 * rng.normal(size=(4, 4)),  # anti-correlated with channel 1
            np.zeros((4, 4)),  # constant: every r is NaN
        ]
    )

    table = heatmaps.channel_correlation_table(heats, images, 2, CHANNELS, ["a", "b", "c"])

    assert list(table.columns) == ["image_id", *CHANNELS, "top_channel", "top_abs_channel"]
    assert list(table["image_id"]) == ["a", "b", "c"]
    r1 = [np.corrcoef(heats[1].ravel(), pooled[1][c].ravel())[0, 1] for c in range(6)]
    np.testing.assert_allclose(table.loc[1, CHANNELS].to_numpy(float), r1, rtol=1e-10)
    assert table.loc[0, "actin"] == pytest.approx(1.0)
    assert table.loc[0, "top_channel"] == "actin" == table.loc[0, "top_abs_channel"]
    assert table.loc[1, "top_abs_channel"] == "ER"
    assert table.loc[1, "top_channel"] == CHANNELS[int(np.argmax(r1))] != "ER"
    assert table.loc[2, CHANNELS].isna().all()
    assert table.loc[2, "top_channel"] is None and table.loc[2, "top_abs_channel"] is None


# --------------------------------------------------------------------------- single cells


def test_cell_alignment_cells_spanning_patches() -> None:
    heat = np.array([[1.0, 2.0], [3.0, 4.0]])
    mask = np.array(
        [
            [0, 1, 1, 0],
            [0, 1, 1, 0],
            [2, 2, 0, 0],
            [2, 0, 0, 5],
        ],
        dtype=np.int32,
    )
    table = single_cell.cell_alignment(heat, mask, 2)
    # Pixel values: rows 0-1 are 1 1 2 2, rows 2-3 are 3 3 4 4.
    expected = pd.DataFrame(
        {
            "cell_label": [0, 1, 2, 5],
            "category": ["background", "cell", "cell", "cell"],
            "n_pixels": [8, 4, 3, 1],
            "alignment": [(1 + 2 + 1 + 2 + 4 + 4 + 3 + 4) / 8, 1.5, 3.0, 4.0],
        }
    )
    pd.testing.assert_frame_equal(table, expected)


def test_cell_alignment_without_background_and_bad_masks() -> None:
    table = single_cell.cell_alignment(np.array([[2.0]]), np.full((2, 2), 3), 2)
    assert table["cell_label"].tolist() == [0, 3]
    assert table["n_pixels"].tolist() == [0, 4]
    assert np.isnan(table["alignment"].iloc[0]) and table["alignment"].iloc[1] == 2.0
    with pytest.raises(ValueError, match="integer cell labels"):
        single_cell.cell_alignment(np.ones((1, 1)), np.ones((2, 2)), 2)
    with pytest.raises(ValueError, match="mask is"):
        single_cell.cell_alignment(np.ones((2, 2)), np.ones((2, 2), dtype=int), 2)


# Two 6x6 images on a 3x3 grid of 2x2 patches; every cell fills one patch, so its alignment is
# its patch's value. Perturbed cells sit on high-alignment patches.
HEAT_0 = [[0.9, 0.8, 0.1], [0.2, -0.3, 0.7], [-0.5, -0.4, -0.6]]
LABELS_0 = [[1, 2, 3], [4, 0, 5], [0, 0, 0]]
HEAT_1 = [[0.6, 0.05, 0.3], [-0.1, 0.0, 0.4], [-0.2, -0.7, 0.5]]
LABELS_1 = [[1, 2, 3], [6, 0, 4], [0, 0, 7]]
PERTURBED = {(0, 1): True, (0, 2): True, (0, 3): False, (0, 4): False, (0, 5): True}
PERTURBED |= {(1, 1): True, (1, 2): False, (1, 3): False, (1, 4): True, (1, 6): True}
PERTURBED |= {(1, 7): False}


def _screen() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    heats = np.array([HEAT_0, HEAT_1])
    masks = heatmaps.upsample_to_pixels(np.array([LABELS_0, LABELS_1], dtype=np.int32), 2)
    cells = pd.DataFrame(
        [
            {"row": row, "cell_label": label, "perturbed": flag, "gene": "g"}
            for (row, label), flag in PERTURBED.items()
        ]
    ).iloc[::-1]
    return heats, masks, cells


def test_single_cell_check_per_cell_and_dark_threshold() -> None:
    heats, masks, cells = _screen()
    per_cell, _, _ = single_cell.single_cell_check(heats, masks, cells, 2, ["img0", "img1"])

    assert list(per_cell.columns) == [
        "image_id",
        "row",
        "cell_label",
        "category",
        "n_pixels",
        "alignment",
        "dark_threshold",
        "dark",
    ]
    assert per_cell["cell_label"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 7]
    assert per_cell["image_id"].tolist() == ["img0"] * 6 + ["img1"] * 7
    assert per_cell["category"].tolist() == [
        "background", "perturbed", "perturbed", "unperturbed", "unperturbed", "perturbed",
        "background", "perturbed", "unperturbed", "unperturbed", "perturbed", "perturbed",
        "unperturbed",
    ]  # fmt: skip
    np.testing.assert_allclose(
        per_cell["alignment"],
        [-0.45, 0.9, 0.8, 0.1, 0.2, 0.7, -0.3, 0.6, 0.05, 0.3, 0.4, -0.1, 0.5],
        rtol=1e-12,
    )
    # Thresholds: the image's mean cell alignment, background excluded.
    np.testing.assert_allclose(
        per_cell["dark_threshold"], [2.7 / 5] * 6 + [1.75 / 6] * 7, rtol=1e-12
    )
    dark = per_cell["dark"]
    assert dark.dtype == "boolean"
    assert dark[per_cell["cell_label"] == 0].isna().all()
    assert dark.fillna(False).tolist() == [
        False, False, False, True, True, False, False, False, True, False, False, True, False,
    ]  # fmt: skip


def test_single_cell_check_recall_precision_and_tests() -> None:
    heats, masks, cells = _screen()
    _, per_image, tests = single_cell.single_cell_check(heats, masks, cells, 2, ["img0", "img1"])

    expected = pd.DataFrame(
        {
            "image_id": ["img0", "img1", "all"],
            "total_cells": [5, 6, 11],
            "perturbed": [3, 3, 6],
            "unperturbed": [2, 3, 5],
            "dark": [2, 2, 4],
            "dark_unperturbed": [2, 1, 3],
            "recall": [1.0, 1 / 3, 3 / 5],
            "precision": [1.0, 1 / 2, 3 / 4],
        }
    )
    pd.testing.assert_frame_equal(per_image, expected)

    perturbed = [0.9, 0.8, 0.7, 0.6, 0.4, -0.1]
    unperturbed = [0.1, 0.2, 0.05, 0.3, 0.5]
    background = [-0.45, -0.3]
    assert tests["comparison"].tolist() == [
        "perturbed > unperturbed",
        "perturbed > background",
        "unperturbed > background",
    ]
    for i, (x, y) in enumerate(
        [(perturbed, unperturbed), (perturbed, background), (unperturbed, background)]
    ):
        direct = stats.mannwhitneyu(x, y, alternative="greater")
        assert tests.loc[i, "statistic"] == pytest.approx(direct.statistic)
        assert tests.loc[i, "p_value"] == pytest.approx(direct.pvalue)
        assert tests.loc[i, ["n_greater", "n_lesser"]].tolist() == [len(x), len(y)]
        assert tests.loc[i, "mean_greater"] == pytest.approx(np.mean(x))
        assert tests.loc[i, "mean_lesser"] == pytest.approx(np.mean(y))
    # U counts pairs where the perturbed cell is higher: 5 + 5 + 5 + 5 + 4 + 0.
    assert tests.loc[0, "statistic"] == 24
    assert tests.loc[0, "stars"] == single_cell.significance_stars(tests.loc[0, "p_value"])


def test_dark_threshold_is_strictly_below_the_image_mean() -> None:
    # Three cells at 0.25, 0.5, 0.75: mean 0.5, so only the 0.25 cell is dark; one cell: none dark.
    heats = np.array([[[0.25, 0.5, 0.75]], [[0.4, -0.2, -0.2]]])
    masks = heatmaps.upsample_to_pixels(np.array([[[1, 2, 3]], [[1, 0, 0]]], dtype=np.int32), 1)
    cells = pd.DataFrame(
        {"row": [0, 0, 0, 1], "cell_label": [1, 2, 3, 1], "perturbed": [False, True, True, False]}
    )
    per_cell, per_image, _ = single_cell.single_cell_check(heats, masks, cells, 1, [10, 11])
    cell_rows = per_cell[per_cell["category"] != "background"]
    assert cell_rows["dark"].tolist() == [True, False, False, False]
    assert per_image["recall"].tolist() == [1.0, 0.0, 0.5]
    assert per_image["image_id"].tolist() == ["10", "11", "all"]
    # The first image has no background: its background row is kept, with NaN alignment.
    assert np.isnan(
        per_cell.loc[per_cell["row"].eq(0) & per_cell["cell_label"].eq(0), "alignment"]
    ).all()


def test_single_cell_check_input_errors(caplog: pytest.LogCaptureFixture) -> None:
    heats, masks, cells = _screen()
    with pytest.raises(ValueError, match=r"no row \(row, cell_label\)"):
        single_cell.single_cell_check(heats, masks, cells.iloc[1:], 2, ["a", "b"])
    with pytest.raises(ValueError, match="missing columns \\['perturbed'\\]"):
        single_cell.single_cell_check(heats, masks, cells.drop(columns="perturbed"), 2, ["a", "b"])
    out_of_range = cells.assign(row=cells["row"] + 1)
    with pytest.raises(ValueError, match="'row' must index the 2 images"):
        single_cell.single_cell_check(heats, masks, out_of_range, 2, ["a", "b"])
    with pytest.raises(ValueError, match="'perturbed' must be boolean"):
        single_cell.single_cell_check(heats, masks, cells.assign(perturbed="yes"), 2, ["a", "b"])

    extra = pd.concat([cells, pd.DataFrame([{"row": 1, "cell_label": 9, "perturbed": True}])])
    with caplog.at_level(logging.WARNING, logger="cellconcepts.microscopy.single_cell"):
        per_cell, _, _ = single_cell.single_cell_check(heats, masks, extra, 2, ["a", "b"])
    assert "no pixel in their mask" in caplog.text
    assert 9 not in per_cell["cell_label"].tolist()


# --------------------------------------------------------------------------- figures


def test_significance_stars() -> None:
    assert [single_cell.significance_stars(p) for p in (1e-5, 1e-4, 5e-4, 0.01, 0.05, 0.2)] == [
        "****",
        "****",
        "***",
        "**",
        "*",
        "ns",
    ]
    assert single_cell.significance_stars(float("nan")) == "n/a"


def test_channel_colours_by_name_and_by_position() -> None:
    colours = figures.channel_colours(["mitochondria", "DNA", "F-actin", "ER", "AGP", "RNA"])
    np.testing.assert_array_equal(
        colours,
        [
            figures.POSITIONAL_COLOURS[4],
            figures.POSITIONAL_COLOURS[0],
            figures.POSITIONAL_COLOURS[2],
            figures.POSITIONAL_COLOURS[1],
            figures.POSITIONAL_COLOURS[5],
            figures.POSITIONAL_COLOURS[3],
        ],
    )
    np.testing.assert_array_equal(
        figures.channel_colours(["c1", "c2", "c3"]), figures.POSITIONAL_COLOURS[:3]
    )


def test_composite_rgb_tints_each_channel() -> None:
    rng = np.random.default_rng(4)
    image = np.zeros((6, 8, 8))
    image[5] = rng.uniform(0, 1000, size=(8, 8))  # only mitochondria is lit
    rgb = figures.composite_rgb(image, CHANNELS)
    low, high = np.percentile(image[5], [1.0, 99.5])
    scaled = np.clip((image[5] - low) / (high - low), 0, 1)
    expected = scaled[..., None] * np.array([0.98, 0.00, 0.99])
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_allclose(rgb, expected, rtol=1e-12)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0


def test_figures_are_written(tmp_path) -> None:
    rng = np.random.default_rng(5)
    images = rng.gamma(2.0, 200.0, size=(2, 6, 16, 16)).astype(np.uint16)
    heats = rng.uniform(-0.8, 0.8, size=(2, 4, 4))
    table = heatmaps.channel_correlation_table(heats, images, 4, CHANNELS, ["x", "y"])
    figures.plot_feature_heatmaps(
        tmp_path / "heat.png", images, heats, CHANNELS, table, ["feature 1", "feature 2"], 4
    )
    heats_s, masks, cells = _screen()
    per_cell, _, _ = single_cell.single_cell_check(heats_s, masks, cells, 2, ["a", "b"])
    figures.plot_single_cell_histograms(tmp_path / "cells.png", per_cell, "feature 1")

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cells.pdf",
        "cells.png",
        "heat.pdf",
        "heat.png",
    ]
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert len(data) > 5000
        assert data[:4] == (b"\x89PNG" if path.suffix == ".png" else b"%PDF")


def _cells_image(cells: list[tuple[int, int]], size: int = 16) -> np.ndarray:
    """A label image with 4x4 square cells at the given top-left corners."""
    mask = np.zeros((size, size), dtype=np.int32)
    for label, (y, x) in enumerate(cells, start=1):
        mask[y : y + 4, x : x + 4] = label
    return mask


def test_control_reference_takes_out_what_cells_bring_to_every_channel() -> None:
    rng = np.random.default_rng(0)
    corners = [(0, 0), (0, 8), (8, 4), (4, 12), (12, 12), (8, 0)]
    masks = np.stack([_cells_image([corners[j] for j in rng.permutation(6)[:3]]) for _ in range(6)])
    inside = (masks > 0).astype(float)
    # every channel is brighter inside cells (10 + 5 * cell); image 5 is perturbed: channel 2
    # gains 3 inside its first cell only
    images = 10.0 + 5.0 * inside[:, None] * np.array([1.0, 2.0, 0.5])[None, :, None, None]
    images[5, 2] += 3.0 * (masks[5] == 1)
    plates = np.array(["p"] * 6)
    reference = heatmaps.ControlReference.fit(images, plates, np.arange(5), 4, masks)
    np.testing.assert_allclose(reference.fits["p"], [[10, 10, 10], [5, 10, 2.5]], atol=1e-9)
    for r in range(5):
        np.testing.assert_allclose(reference.change(images[r], "p", 4, masks[r]), 0, atol=1e-9)
    change = reference.change(images[5], "p", 4, masks[5])
    truth = heatmaps.oracle_heats(masks[5:], [np.array([1])], 4)[0]
    table = heatmaps.control_change_correlations(truth[None], change[None], ["a", "b", "c"])
    assert table.loc[0, "c_vs_control"] == pytest.approx(1.0)
    assert np.isnan(table.loc[0, "a_vs_control"])  # no change at all in channel a
    assert table.loc[0, "top_channel_vs_control"] == "c"
    raw = heatmaps.channel_correlations(truth, images[5], 4)
    assert raw[1] > 0.3  # raw r credits the bright channel b, which did not change
    positional = heatmaps.ControlReference.fit(images, plates, np.arange(5), 4)
    control_mean = np.mean([heatmaps.pool_to_patches(i, 4) for i in images[:5]], axis=0)
    np.testing.assert_allclose(
        positional.change(images[5], "p", 4), heatmaps.pool_to_patches(images[5], 4) - control_mean
    )
    with pytest.raises(ValueError, match="plate 'q': no control image"):
        reference.change(images[5], "q", 4, masks[5])


def test_plates_without_controls_are_compared_with_every_plates_controls() -> None:
    """Controls on plate p only: with the pooled fallback, plate q's images are compared with
    the mean of every control image (here p's), and `source` says so; without it, refused."""
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, 2, 8, 8))
    plates = np.array(["p", "p", "p", "q", "q", "q"])
    controls = np.array([0, 1])
    pooled = heatmaps.ControlReference.fit(images, plates, controls, 4, pooled_fallback=True)
    mean = np.mean([heatmaps.pool_to_patches(images[r], 4) for r in controls], axis=0)
    for row in range(6):
        np.testing.assert_allclose(
            pooled.change(images[row], plates[row], 4),
            heatmaps.pool_to_patches(images[row], 4) - mean,
        )
    assert [pooled.source(p) for p in plates] == ["p"] * 3 + ["all plates"] * 3
    strict = heatmaps.ControlReference.fit(images, plates, controls, 4)
    with pytest.raises(ValueError, match="plate 'q': no control image"):
        strict.source("q")


def test_channel_summary_ranks_the_expected_channel_per_attribution() -> None:
    names = ["a", "b"]
    table = pd.DataFrame(
        {
            "label": ["g", "g", "h"],
            "feature": [1, 1, 2],
            "a": [0.5, 0.3, 0.1],
            "b": [0.9, 0.7, 0.2],
            "a_vs_control": [0.4, 0.2, -0.1],
            "b_vs_control": [0.1, 0.1, 0.3],
        }
    )
    groups = pd.DataFrame({"gene_group": ["g", "h"], "channel": ["a", "b"]})
    summary = heatmaps.channel_summary(table, names, groups).set_index("label")
    assert (
        summary.loc["g", "expected_rank"] == 2 and summary.loc["g", "expected_rank_vs_control"] == 1
    )
    assert summary.loc["g", "expected_r_vs_control"] == pytest.approx(0.3)
    assert summary.loc["h", "top_channel_vs_control"] == "b"
    assert summary["expected_is_top_vs_control"].tolist() == [True, True]
    assert "expected_rank_oracle_vs_control" not in summary.columns


# --------------------------------------------------------------------------- controls


def test_sample_control_images_seeded_sorted_and_capped() -> None:
    is_control = np.array([False, True, True, False, True, True, False])
    assert heatmaps.CONTROL_SEED == 0 and heatmaps.CENTRE_CONTROL_IMAGES == 256
    draw = np.random.default_rng(0).choice(np.array([1, 2, 4, 5]), size=2, replace=False)
    np.testing.assert_array_equal(heatmaps.sample_control_images(is_control, 2), np.sort(draw))
    np.testing.assert_array_equal(
        heatmaps.sample_control_images(is_control, 2), heatmaps.sample_control_images(is_control, 2)
    )
    # fewer controls than asked for: all of them, sorted
    np.testing.assert_array_equal(heatmaps.sample_control_images(is_control), [1, 2, 4, 5])
    assert heatmaps.sample_control_images(np.zeros(3, dtype=bool)).size == 0


def test_sample_plate_controls_draws_per_plate_with_one_generator() -> None:
    is_control = np.array([True, True, False, True, True, True, False])
    plates = np.array(["q", "q", "q", "p", "p", "r", "r"])
    rng = np.random.default_rng(0)
    # plates in sorted order (p, q, r), one generator across them
    expected = np.sort(
        np.concatenate(
            [
                rng.choice(np.array([3, 4]), size=1, replace=False),
                rng.choice(np.array([0, 1]), size=1, replace=False),
                rng.choice(np.array([5]), size=1, replace=False),
            ]
        )
    )
    np.testing.assert_array_equal(heatmaps.sample_plate_controls(is_control, plates, 1), expected)
    np.testing.assert_array_equal(
        heatmaps.sample_plate_controls(is_control, plates), [0, 1, 3, 4, 5]
    )
    with pytest.raises(ValueError, match="obs.parquet: no control image"):
        heatmaps.sample_plate_controls(np.zeros(7, dtype=bool), plates, where="obs.parquet")


def test_image_plates_joins_the_present_columns() -> None:
    obs = pd.DataFrame({"plate": ["a", "b"], "batch": [1, 2], "other": ["x", "y"]})
    assert heatmaps.image_plates(obs, "plate").tolist() == ["a", "b"]
    assert heatmaps.image_plates(obs, ["batch", "missing", "plate"]).tolist() == ["1/a", "2/b"]
    assert heatmaps.image_plates(obs, ["missing"]).tolist() == ["all", "all"]


def test_channel_names_cell_painting_or_numbered() -> None:
    from cellconcepts.sources.cellpainting import CHANNELS as PAINTED

    assert heatmaps.channel_names(len(PAINTED)) == list(PAINTED)
    assert heatmaps.channel_names(2) == ["channel_0", "channel_1"]


def test_control_reference_fits_sampled_controls_per_plate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Constant images: plate p's controls (rows 0, 1) average 2, and plate q, without
    controls, falls back to every plate's controls (warned)."""
    values = np.array([1.0, 3.0, 7.0, 5.0, 9.0])
    images = np.broadcast_to(values[:, None, None, None], (5, 2, 4, 4)).copy()
    images[:, 1] *= 10
    plates = np.array(["p", "p", "p", "q", "q"])
    is_control = np.array([True, True, False, False, False])
    with caplog.at_level(logging.WARNING, logger=heatmaps.log.name):
        reference = heatmaps.control_reference(images, plates, is_control, 2)
    assert sorted(reference.fits) == ["all plates", "p"]
    expected = np.broadcast_to(np.array([2.0, 20.0])[:, None, None], (2, 2, 2))
    np.testing.assert_allclose(reference.fits["p"], expected)
    np.testing.assert_allclose(reference.fits["all plates"], expected)
    assert "plates without control images: ['q']" in caplog.text
    np.testing.assert_allclose(
        reference.change(images[3], "q", 2), np.broadcast_to([[[3.0]], [[30.0]]], (2, 2, 2))
    )
    with pytest.raises(ValueError, match="obs: no control image"):
        heatmaps.control_reference(images, plates, np.zeros(5, dtype=bool), 2, where="obs")


def test_perturbed_cell_heats_cover_the_perturbed_cells_of_each_row() -> None:
    masks = np.stack([_cells_image([(0, 0), (8, 8)], size=8 * 2), _cells_image([(0, 12)])])
    cells = pd.DataFrame(
        {
            "image_index": [0, 0, 1],
            "cell_label": [1, 2, 1],
            "perturbed": [False, True, False],
        }
    )
    heats = heatmaps.perturbed_cell_heats(masks, cells, np.array([1, 0]), 8)
    # image 1: no perturbed cell; image 0: cell 2 fills 16 of patch (1, 1)'s 64 pixels
    np.testing.assert_array_equal(heats, [[[0, 0], [0, 0]], [[0, 0], [0, 0.25]]])


def test_patch_token_rows_indexes_the_distinct_rows() -> None:
    selected = pd.DataFrame({"label": ["a", "a", "b", "b"], "row": [5, 2, 5, 9]})
    indexed, rows = heatmaps.patch_token_rows(selected)
    np.testing.assert_array_equal(rows, [2, 5, 9])
    assert indexed["patch_index"].tolist() == [1, 0, 1, 2]
    assert indexed.columns.tolist() == ["label", "row", "patch_index"]
    assert "patch_index" not in selected.columns
    with pytest.raises(ValueError, match="codes.npz: no feature is active"):
        heatmaps.patch_token_rows(selected.iloc[:0], where="codes.npz")


def test_feature_attribution_raw_against_controls_and_oracle() -> None:
    """Two plates of 8x8 images on a 2x2 grid of 4-pixel patches; row 2 (plate p) and row 3
    (plate q) are drawn, each with its plate's controls as reference."""
    rng = np.random.default_rng(3)
    images = rng.normal(size=(5, 2, 8, 8))
    masks = np.stack([_cells_image([(0, 0), (4, 4)], size=8)] * 5)
    cells = pd.DataFrame(
        {"image_index": [2, 2, 3], "cell_label": [1, 2, 2], "perturbed": [True, False, True]}
    )
    plates = np.array(["p", "p", "p", "q", "q"])
    reference = heatmaps.ControlReference.fit(images, plates, np.array([0, 1, 4]), 4)
    selected = pd.DataFrame(
        {"label": ["a", "b"], "feature": [7, 8], "row": [2, 3], "image_id": ["i2", "i3"]}
    )
    heats = np.array([[[1.0, 0.0], [0.0, 2.0]], [[0.0, 1.0], [3.0, 0.0]]])

    table = heatmaps.feature_attribution(
        selected, heats, images, plates, reference, 4, ["u", "v"], masks, cells
    )

    assert table.columns.tolist()[:4] == ["label", "feature", "control_reference", "image_id"]
    assert table["label"].tolist() == ["a", "b"] and table["feature"].tolist() == [7, 8]
    assert table["control_reference"].tolist() == ["p", "q"]
    pooled = _pooled_by_loops
    for i, (row, controls) in enumerate([(2, [0, 1]), (3, [4])]):
        change = pooled(images[row], 4) - np.mean([pooled(images[c], 4) for c in controls], 0)
        for c, name in enumerate(["u", "v"]):
            raw = np.corrcoef(heats[i].ravel(), pooled(images[row], 4)[c].ravel())[0, 1]
            assert table.loc[i, name] == pytest.approx(raw)
            vs_control = np.corrcoef(heats[i].ravel(), change[c].ravel())[0, 1]
            assert table.loc[i, f"{name}_vs_control"] == pytest.approx(vs_control)
    # the oracle heatmap: row 2's cell 1 fills patch (0, 0); row 3's cell 2 fills (1, 1)
    oracle_2 = np.array([1.0, 0.0, 0.0, 0.0])
    change_2 = pooled(images[2], 4) - np.mean([pooled(images[c], 4) for c in [0, 1]], 0)
    assert table.loc[0, "v_oracle_vs_control"] == pytest.approx(
        np.corrcoef(oracle_2, change_2[1].ravel())[0, 1]
    )
    without_cells = heatmaps.feature_attribution(
        selected, heats, images, plates, reference, 4, ["u", "v"]
    )
    assert not any(c.endswith("_oracle_vs_control") for c in without_cells.columns)
    pd.testing.assert_frame_equal(without_cells, table[without_cells.columns])
