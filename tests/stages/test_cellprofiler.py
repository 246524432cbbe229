"""Stages of the CellProfiler baseline on small stores: alignment, thresholding, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellconcepts.cellprofiler import headless as cellprofiler
from cellconcepts.cellprofiler.measure import chunk_rows, resolve_backend
from cellconcepts.stages.cellprofiler import (
    cellprofiler_measure,
    cellprofiler_profiles,
    cellprofiler_threshold,
)
from cellconcepts.store.tokens import write_token_store

PIPELINE = Path(__file__).resolve().parents[2] / "resources/cellprofiler/cellpainting.cppipe"


def test_chunks_cover_every_row_once():
    chunks = [chunk_rows(10, 3, c) for c in range(3)]
    assert np.concatenate(chunks).tolist() == list(range(10))
    assert [len(c) for c in chunks] == [4, 3, 3]


def test_backend_resolution(tmp_path):
    nothing = str(tmp_path / "nothing")
    assert resolve_backend("auto", nothing) == ("cp_measure", None)
    with pytest.raises(FileNotFoundError, match="nothing is not an executable"):
        resolve_backend("cellprofiler", nothing)
    fake = tmp_path / "cellprofiler"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert resolve_backend("auto", str(fake)) == ("cellprofiler", str(fake))


def _stores(tmp_path, n=60, n_features=40):
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(n)]
    obs = pd.DataFrame(
        {
            "token_id": ids,
            "is_control": np.arange(n) < 20,
            "split": "train",
            "gene": np.where(np.arange(n) < 20, "ctrl", np.where(np.arange(n) % 2, "g1", "g2")),
        }
    )
    write_token_store(tmp_path / "tokens", rng.normal(size=(n, 4)), obs)
    profiles = pd.DataFrame(rng.normal(size=(n, n_features)), columns=[f"f{j}" for j in range(40)])
    profiles.insert(0, "image_id", ids)
    # profiles in another order than the token store: the stage must align them
    profiles.sample(frac=1, random_state=1).to_parquet(tmp_path / "profiles.parquet")
    return profiles


def _threshold(tmp_path, *, reference: str, target: float, sweep: list[float]) -> None:
    """The threshold stage on the stores of `_stores`, outputs beside them."""
    cellprofiler_threshold(
        obs=tmp_path / "tokens" / "obs.parquet",
        profiles=tmp_path / "profiles.parquet",
        codes=tmp_path / "codes.npz",
        thresholds=tmp_path / "thresholds.csv",
        sweep=tmp_path / "sweep.csv",
        reference=reference,
        target_active=target,
        sweep_targets=sweep,
        task={"name": "gene", "column": "gene"},
    )


def test_threshold_stage_aligns_and_hits_target(tmp_path):
    profiles = _stores(tmp_path)
    _threshold(tmp_path, reference="controls", target=6, sweep=[6, 12])
    codes = sp.load_npz(tmp_path / "codes.npz").toarray()
    assert abs((codes != 0).sum(axis=1).mean() - 6) <= 1
    thresholds = pd.read_csv(tmp_path / "thresholds.csv")
    values = profiles.drop(columns="image_id").to_numpy()  # token order = original order
    expected = np.where(
        values > thresholds.upper.to_numpy(),
        1,
        np.where(values < thresholds.lower.to_numpy(), -1, 0),
    )
    np.testing.assert_array_equal(codes, expected)
    lower = np.quantile(values[:20], thresholds.alpha[0], axis=0)
    np.testing.assert_allclose(thresholds.lower, lower)
    sweep = pd.read_csv(tmp_path / "sweep.csv")
    assert sweep.target.tolist() == [6, 12]
    assert (abs(sweep.mean_active - sweep.target) <= 1).all()
    assert sweep.mean_best_avg.between(-1, 1).all()


def test_missing_profile_is_named(tmp_path):
    profiles = _stores(tmp_path)
    profiles.iloc[1:].to_parquet(tmp_path / "profiles.parquet")
    with pytest.raises(ValueError, match=r"no profile for tokens \['img0'\]"):
        _threshold(tmp_path, reference="all", target=6, sweep=[])
    assert not (tmp_path / "codes.npz").exists()


def _image_store(tmp_path, images):
    folder = tmp_path / "images"
    folder.mkdir()
    np.save(folder / "images.npy", images)
    pd.DataFrame({"image_id": [f"img{i}" for i in range(len(images))]}).to_parquet(
        folder / "obs.parquet"
    )
    return folder


SETTINGS = {
    "backend": "cp_measure",
    "channels": ["nucleus", "er", "rna", "actin", "golgi_membrane", "mitochondria"],
    "nucleus_channel": "nucleus",
    "cytoplasm_channel": "er",
}


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (np.nan, r"images.npy: image 2 \(img2\) holds non-finite"),
        (0.0, r"image 2 \(img2\) has blank"),
    ],
)
def test_corrupt_image_is_named(tmp_path, corrupt, message):
    images = np.random.default_rng(0).random((3, 6, 16, 16)).astype(np.float32)
    if np.isnan(corrupt):
        images[2, 4, 3, 3] = corrupt
    else:
        images[2, 4] = corrupt
    folder = _image_store(tmp_path, images)
    with pytest.raises(ValueError, match=message):
        _measure(tmp_path, folder)
    assert not (tmp_path / "cells.parquet").exists()


def _measure(tmp_path, folder):
    cellprofiler_measure(
        images=folder / "images.npy",
        image_obs=folder / "obs.parquet",
        cells=tmp_path / "cells.parquet",
        masks=tmp_path / "masks.npy",
        timing=tmp_path / "timing.json",
        settings=SETTINGS,
        chunk=0,
        n_chunks=1,
        work_dir=tmp_path / "work",
        execution={"executable": None},
    )


def test_channel_count_mismatch_is_named(tmp_path):
    folder = _image_store(tmp_path, np.ones((2, 3, 16, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="names 6 channels but .*images.npy has 3"):
        _measure(tmp_path, folder)


def test_profiles_stage_keeps_image_order_and_reports(tmp_path):
    folder = _image_store(tmp_path, np.ones((3, 6, 16, 16), dtype=np.float32))
    cells = pd.DataFrame(
        {
            "image_id": ["img2", "img0", "img0", "img1"],
            "image_index": [2, 0, 0, 1],
            "object_number": [1, 1, 2, 1],
            "Cells_AreaShape_Area": [10.0, 4.0, 6.0, 7.0],
            "Cells_Constant": [1.0, 1.0, 1.0, 1.0],
        }
    )
    cells.to_parquet(tmp_path / "cells.parquet")
    (tmp_path / "timing.json").write_text(
        json.dumps({"backend": "cp_measure", "n_images": 3, "seconds": 0.6})
    )
    cellprofiler_profiles(
        image_obs=folder / "obs.parquet",
        cells=[tmp_path / "cells.parquet"],
        timing=[tmp_path / "timing.json"],
        profiles=tmp_path / "profiles.parquet",
        summary=tmp_path / "summary.csv",
        aggregate="mean",
    )
    profiles = pd.read_parquet(tmp_path / "profiles.parquet")
    assert profiles.image_id.tolist() == ["img0", "img1", "img2"]
    assert profiles.Cells_AreaShape_Area.tolist() == [5.0, 7.0, 10.0]
    assert "Cells_Constant" not in profiles
    summary = pd.read_csv(tmp_path / "summary.csv").iloc[0]
    assert summary.n_dropped_constant == 1
    assert summary.seconds_per_image == pytest.approx(0.2)


def test_pipeline_and_config_must_agree(tmp_path):
    cellprofiler.check_pipeline(PIPELINE, SETTINGS["channels"], "nucleus", "er")
    with pytest.raises(ValueError, match="IdentifySecondaryObjects runs on 'Er'.*'Rna'"):
        cellprofiler.check_pipeline(PIPELINE, SETTINGS["channels"], "nucleus", "rna")
    with pytest.raises(ValueError, match="cellprofiler.channels gives"):
        cellprofiler.check_pipeline(
            PIPELINE, [*SETTINGS["channels"], "brightfield"], "nucleus", "er"
        )


def test_unreachable_target_falls_back_to_the_nearest_count(tmp_path, caplog):
    _stores(tmp_path)
    _threshold(tmp_path, reference="controls", target=1, sweep=[])
    thresholds = pd.read_csv(tmp_path / "thresholds.csv")
    values = pd.read_parquet(tmp_path / "profiles.parquet").set_index("image_id")
    reference = values.loc[[f"img{i}" for i in range(20)]].to_numpy()
    lower, upper = np.quantile(reference, [1e-12, 1 - 1e-12], axis=0)
    floor = ((values.to_numpy() < lower) | (values.to_numpy() > upper)).sum(axis=1).mean()
    assert thresholds.mean_active[0] == pytest.approx(floor, abs=0.1)
    assert "unreachable" in caplog.text
    sweep = pd.read_csv(tmp_path / "sweep.csv")
    assert sweep.mean_active.tolist() == [pytest.approx(floor)]
