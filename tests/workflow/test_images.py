"""The workflow on a screen in its microscope layout: `microscopy.images` as a LoadData CSV
(rule import_images), on files the test writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from testkit import TINY_VIT, run_snakemake

pytestmark = pytest.mark.slow

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito", "Brightfield"]


def _screen(root: Path) -> np.ndarray:
    """Two plates of 4 sites, 6 channels of 64 px (tiled to the ViT's 32), as 16-bit TIFFs."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60000, (8, 6, 64, 64), dtype=np.uint16)
    rows = []
    for i, image in enumerate(images):
        plate, gene = f"P{i // 4 + 1}", ["non-targeting", "ACTB", "TP53", "non-targeting"][i % 4]
        row = {"Metadata_plate": plate, "Metadata_well": f"A{i % 4:02d}", "Metadata_gene": gene}
        for channel, plane in zip(CHANNELS, image, strict=True):
            name = f"{row['Metadata_well']}_{channel}.tif"
            (root / "screen" / plate).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "screen" / plate / name, plane)
            row |= {f"FileName_{channel}": name, f"PathName_{channel}": plate}
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "screen" / "load_data.csv", index=False)
    return images


def test_a_load_data_screen_is_imported_and_feeds_the_encoder(tmp_path: Path) -> None:
    images = _screen(tmp_path)
    config = {
        "results": "results",
        "datasets": {
            "plated": {
                "kind": "microscopy",
                "microscopy": {
                    "images": {
                        "load_data": "screen/load_data.csv",
                        "channels": CHANNELS,
                        "tile": 32,
                    },
                    "model": {"architecture": TINY_VIT, "mae": {"steps": 5, "batch_size": 8}},
                    "layer_task": "gene",
                    "heatmaps": {"task": "gene", "exclude": ["non-targeting"]},
                    "cellprofiler": {"enabled": False},
                },
                "control": {"column": "gene", "values": ["non-targeting"]},
                "tasks": [{"name": "gene", "column": "gene"}],
            }
        },
    }
    store = "results/plated/images"
    result = run_snakemake(tmp_path, config, "--cores", "1", f"{store}/images.npy")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    stored = np.load(tmp_path / store / "images.npy")
    obs = pd.read_parquet(tmp_path / store / "obs.parquet")
    assert stored.shape == (32, 6, 32, 32) and stored.dtype == np.uint16
    np.testing.assert_array_equal(stored[5], images[1][:, :32, 32:])  # image 2, tile 2
    assert obs.loc[5, "image_id"] == "image0000001_t1"
    assert list(obs.gene[:4]) == ["non-targeting"] * 4
    # The rest of the branch is scheduled on the imported store (dry run).
    planned = run_snakemake(tmp_path, config, "--cores", "1", "-n")
    assert planned.returncode == 0, planned.stdout[-4000:]
    for rule in ("train_mae", "embed_images", "choose_layer", "train_dictionary"):
        assert rule in planned.stdout
    assert "import_images" not in planned.stdout.split("Job stats")[-1]  # already done
    # A listed file gone: the import fails naming it, and leaves no finished-looking store.
    (tmp_path / "screen/P2/A01_ER.tif").unlink()
    (tmp_path / store / "images.npy").unlink()
    failed = run_snakemake(tmp_path, config, "--cores", "1", f"{store}/images.npy")
    assert failed.returncode != 0
    log = (tmp_path / "results/plated/logs/import_images.log").read_text()
    assert "A01_ER.tif: missing (row 6 of" in log
    assert not (tmp_path / store / "images.npy").exists()
