"""Screens in their microscope layouts -> image stores (cellconcepts.store.image_sources)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.ndimage import gaussian_filter

from cellconcepts.store.image_sources import ImageSource, import_images
from cellconcepts.store.images import open_image_store
from cellconcepts.store.layout import ImageFiles

CHANNELS = ("DNA", "ER", "Mito")


def _pixels(seed: int, shape=(3, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 4000, shape, dtype=np.uint16)


def _load_data_screen(root: Path, plates=("P1", "P2"), per_plate=3) -> tuple[Path, list]:
    """Per-channel TIFFs (DNA, ER) and PNGs (Mito) listed in a LoadData CSV, two plates."""
    rows, images = [], []
    for plate in plates:
        folder = root / "images" / plate
        folder.mkdir(parents=True)
        for site in range(per_plate):
            image = _pixels(len(images))
            row = {"Metadata_plate": plate, "Metadata_gene": f"G{site}", "Metadata_site": site}
            for channel, plane in zip(CHANNELS, image, strict=True):
                name = f"s{site}_{channel}." + ("png" if channel == "Mito" else "tif")
                if name.endswith("png"):
                    iio.imwrite(folder / name, plane)
                else:
                    tifffile.imwrite(folder / name, plane)
                row |= {f"FileName_{channel}": name, f"PathName_{channel}": f"images/{plate}"}
            rows.append(row)
            images.append(image)
    table = root / "load_data.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table, images


def _store(tmp_path: Path) -> ImageFiles:
    out = tmp_path / "store"
    return ImageFiles(out / "images.npy", out / "obs.parquet")


def test_a_load_data_csv_becomes_the_store_unchanged(tmp_path: Path) -> None:
    table, images = _load_data_screen(tmp_path)
    source = ImageSource.from_config({"load_data": "load_data.csv", "channels": CHANNELS}, tmp_path)
    obs = import_images(source, _store(tmp_path))
    store = open_image_store(_store(tmp_path))
    assert store.images.dtype == np.uint16
    np.testing.assert_array_equal(store.images, np.stack(images))
    assert list(store.obs["plate"]) == ["P1"] * 3 + ["P2"] * 3
    assert list(store.obs["gene"]) == ["G0", "G1", "G2"] * 2
    assert store.obs["image_id"].is_unique
    assert store.obs.loc[4, "file_Mito"] == str(tmp_path / "images/P2/s1_Mito.png")
    assert obs.equals(store.obs)


def test_a_file_pattern_over_a_metadata_table(tmp_path: Path) -> None:
    """RxRx layout: {plate}/{well}_s{site}_w{channel}.png, channels named 1..3."""
    meta, expected = [], []
    for i, (plate, well, site) in enumerate([("1", "B02", 1), ("1", "B02", 2), ("2", "C03", 1)]):
        image = _pixels(10 + i)
        (tmp_path / plate).mkdir(exist_ok=True)
        for channel, plane in enumerate(image, start=1):
            iio.imwrite(tmp_path / plate / f"{well}_s{site}_w{channel}.png", plane)
        meta.append({"plate": plate, "well": well, "site": site, "gene": f"g{i}"})
        expected.append(image)
    pd.DataFrame(meta).to_csv(tmp_path / "metadata.csv", index=False)
    section = {
        "files": "{plate}/{well}_s{site}_w{channel}.png",
        "metadata": "metadata.csv",
        "channels": [1, 2, 3],
    }
    import_images(ImageSource.from_config(section, tmp_path), _store(tmp_path))
    store = open_image_store(_store(tmp_path))
    np.testing.assert_array_equal(store.images, np.stack(expected))
    assert list(store.obs["well"]) == ["B02", "B02", "C03"]


def test_the_rxrx3_core_layout(tmp_path: Path) -> None:
    """JPEG 2000 planes named {experiment_name}/Plate{plate}/{address}_s1_{channel}.jp2, plate
    numbers repeating across experiments, wells named by well_id."""
    meta, expected = [], []
    for i, (experiment, plate) in enumerate([("gene-001", 1), ("gene-002", 1), ("gene-002", 1)]):
        address = f"AB{i + 2:02d}"
        image = np.random.default_rng(i).integers(0, 255, (6, 16, 16), dtype=np.uint8)
        folder = tmp_path / "images" / experiment / f"Plate{plate}"
        folder.mkdir(parents=True, exist_ok=True)
        for channel, plane in enumerate(image, start=1):
            iio.imwrite(folder / f"{address}_s1_{channel}.jp2", plane, extension=".jp2")
        well_id = f"{experiment}_{plate}_{address}"
        meta.append(
            {
                "well_id": well_id,
                "experiment_name": experiment,
                "plate": plate,
                "address": address,
                "gene": f"g{i}",
            }
        )
        expected.append(image)
    pd.DataFrame(meta).to_csv(tmp_path / "metadata_rxrx3_core.csv", index=False)
    section = {
        "files": "{experiment_name}/Plate{plate}/{address}_s1_{channel}.jp2",
        "metadata": "metadata_rxrx3_core.csv",
        "root": "images",
        "channels": [1, 2, 3, 4, 5, 6],
        "plate_column": ["experiment_name", "plate"],
        "id_column": "well_id",
        "normalize": "plate",
    }
    import_images(ImageSource.from_config(section, tmp_path), _store(tmp_path))
    store = open_image_store(_store(tmp_path))
    assert list(store.obs["image_id"]) == [m["well_id"] for m in meta]
    # two plates (gene-001/1 and gene-002/1), each brought to median 1 per channel
    raw = np.stack(expected).astype(np.float64)
    for rows in ([0], [1, 2]):
        median = np.median(np.median(raw[rows], axis=(2, 3)), axis=0)[:, None, None]
        np.testing.assert_allclose(store.images[rows], raw[rows] / median, rtol=1e-5)


def test_multichannel_files_cut_into_tiles(tmp_path: Path) -> None:
    image = _pixels(5, (3, 32, 32))
    tifffile.imwrite(tmp_path / "a.tif", image, photometric="minisblack")  # (C, H, W)
    tifffile.imwrite(tmp_path / "b.tif", np.moveaxis(image[::-1], 0, -1), photometric="rgb")
    pd.DataFrame({"name": ["a", "b"], "image_id": ["x", "y"]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    section = {"files": "{name}.tif", "metadata": "meta.csv", "channels": CHANNELS, "tile": 16}
    import_images(ImageSource.from_config(section, tmp_path), _store(tmp_path))
    store = open_image_store(_store(tmp_path))
    assert store.images.shape == (8, 3, 16, 16)
    assert list(store.obs["image_id"][:4]) == ["x_t0", "x_t1", "x_t2", "x_t3"]
    assert list(store.obs["source_image_id"]) == ["x"] * 4 + ["y"] * 4
    assert (store.obs.loc[3, "tile_y"], store.obs.loc[3, "tile_x"]) == (16, 16)
    np.testing.assert_array_equal(store.images[1], image[:, :16, 16:])
    np.testing.assert_array_equal(store.images[6], image[::-1, 16:, :16])


def test_illumination_correction_divides_by_the_smoothed_plate_mean(tmp_path: Path) -> None:
    """Images with a left-to-right illumination gradient: the correction is the plate's mean
    image, smoothed (sigma = 1/8 of the side) and scaled to mean 1, per channel."""
    _, images = _load_data_screen(tmp_path, plates=("P1",), per_plate=4)
    gradient = np.linspace(0.5, 1.5, 16)[None, None, :]
    shaded = [np.round(image * gradient).astype(np.uint16) for image in images]
    for site, image in enumerate(shaded):
        for channel, plane in zip(CHANNELS, image, strict=True):
            path = tmp_path / "images/P1" / f"s{site}_{channel}"
            if channel == "Mito":
                iio.imwrite(path.with_suffix(".png"), plane)
            else:
                tifffile.imwrite(path.with_suffix(".tif"), plane)
    section = {"load_data": "load_data.csv", "channels": CHANNELS, "illumination": "plate"}
    import_images(ImageSource.from_config(section, tmp_path), _store(tmp_path))
    store = open_image_store(_store(tmp_path))
    mean = np.mean(np.stack(shaded).astype(np.float64), axis=0)
    function = np.stack([gaussian_filter(p, 2.0, mode="nearest") for p in mean])
    function /= function.mean(axis=(1, 2), keepdims=True)
    assert store.images.dtype == np.float32
    np.testing.assert_allclose(store.images, np.stack(shaded) / function, rtol=1e-5)
    columns = np.asarray(store.images).mean(axis=(0, 1, 2))
    raw_columns = np.stack(shaded).mean(axis=(0, 1, 2))
    assert columns[-1] / columns[0] < 0.5 * raw_columns[-1] / raw_columns[0]


def test_plate_normalisation_puts_every_plate_median_at_one(tmp_path: Path) -> None:
    table, _ = _load_data_screen(tmp_path)
    section = {"load_data": "load_data.csv", "channels": CHANNELS, "normalize": "plate"}
    import_images(ImageSource.from_config(section, tmp_path), _store(tmp_path))
    store = open_image_store(_store(tmp_path))
    for plate in ("P1", "P2"):
        rows = np.flatnonzero(store.obs["plate"] == plate)
        medians = np.median(np.asarray(store.images[rows]), axis=(2, 3))
        np.testing.assert_allclose(np.median(medians, axis=0), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", r"s1_ER\.tif: missing \(row 2 of .*load_data\.csv, channel ER\)"),
        ("corrupt", r"s1_ER\.tif: not a readable image \(row 2 of .*load_data\.csv"),
        ("rgb", r"s1_ER\.tif: expected a single-channel 2-D image for channel 'ER'"),
        ("size", r"row 2 of .*load_data\.csv: channels differ in size"),
        ("column", r"load_data\.csv: no column FileName_ER for channel 'ER'"),
    ],
)
def test_damaged_screens_are_refused_naming_the_file(
    tmp_path: Path, damage: str, message: str
) -> None:
    table, _ = _load_data_screen(tmp_path)
    broken = tmp_path / "images/P1/s1_ER.tif"
    if damage == "missing":
        broken.unlink()
    elif damage == "corrupt":
        broken.write_bytes(b"II*\x00 this is not a TIFF")
    elif damage == "rgb":
        tifffile.imwrite(broken, _pixels(1, (16, 16, 3)), photometric="rgb")
    elif damage == "size":
        tifffile.imwrite(broken, _pixels(1, (1, 8, 16))[0])
    else:
        pd.read_csv(table).drop(columns="FileName_ER").to_csv(table, index=False)
    source = ImageSource.from_config({"load_data": "load_data.csv", "channels": CHANNELS}, tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        import_images(source, _store(tmp_path))
    assert not _store(tmp_path).images.exists()
    assert not _store(tmp_path).obs.exists()


def test_a_file_with_the_wrong_channel_count_is_named(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", _pixels(1, (3, 16, 16)), photometric="minisblack")
    tifffile.imwrite(tmp_path / "b.tif", _pixels(2, (2, 16, 16)), photometric="minisblack")
    pd.DataFrame({"name": ["a", "b"]}).to_csv(tmp_path / "meta.csv", index=False)
    source = ImageSource.from_config(
        {"files": "{name}.tif", "metadata": "meta.csv", "channels": CHANNELS}, tmp_path
    )
    with pytest.raises(ValueError, match=r"b\.tif: 2 channels .* expected 3 \(DNA, ER, Mito"):
        import_images(source, _store(tmp_path))


def test_images_of_another_size_than_the_first_are_named(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", _pixels(1, (3, 16, 16)), photometric="minisblack")
    tifffile.imwrite(tmp_path / "b.tif", _pixels(2, (3, 16, 24)), photometric="minisblack")
    pd.DataFrame({"name": ["a", "b"]}).to_csv(tmp_path / "meta.csv", index=False)
    source = ImageSource.from_config(
        {"files": "{name}.tif", "metadata": "meta.csv", "channels": CHANNELS}, tmp_path
    )
    with pytest.raises(ValueError, match=r"row 2 of .*meta\.csv: image of shape \(3, 16, 24\)"):
        import_images(source, _store(tmp_path))


def test_a_pattern_field_missing_from_the_metadata_is_named(tmp_path: Path) -> None:
    pd.DataFrame({"plate": [1]}).to_csv(tmp_path / "meta.csv", index=False)
    source = ImageSource.from_config(
        {"files": "{plate}/{well}_w{channel}.png", "metadata": "meta.csv", "channels": CHANNELS},
        tmp_path,
    )
    with pytest.raises(ValueError, match=r"uses \['well'\], which are not columns of"):
        import_images(source, _store(tmp_path))


def test_a_tile_that_does_not_divide_the_image_is_refused(tmp_path: Path) -> None:
    _load_data_screen(tmp_path)
    source = ImageSource.from_config(
        {"load_data": "load_data.csv", "channels": CHANNELS, "tile": 5}, tmp_path
    )
    with pytest.raises(ValueError, match=r"tile: 5 does not divide the images' size 16x16"):
        import_images(source, _store(tmp_path))
