"""Screens as they come off a microscope -> an image store: one file per channel listed in a
CellProfiler LoadData CSV, or files named by a pattern over a metadata table (the JUMP and RxRx
layouts). Images are read one at a time (tifffile / imageio), checked, optionally corrected for
uneven illumination and normalised per plate, cut into tiles, and written to ``images.npy`` in
order, so memory does not grow with the screen (RxRx3-core is ~220k six-channel images).
"""

from __future__ import annotations

import logging
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cellconcepts.defaults import schema_default
from cellconcepts.files import NpyRowWriter, PathLike, atomic_path, write_frame
from cellconcepts.store.layout import ImageFiles

log = logging.getLogger(__name__)

METADATA_PREFIX = "Metadata_"
_KEY = "datasets.*.microscopy.images"  # the config section of `ImageSource`


@dataclass(frozen=True)
class ImageSource:
    """Where a screen's images are and how to turn them into a store (`microscopy.images`)."""

    channels: tuple[str, ...]
    load_data: Path | None = None
    files: str | None = None
    metadata: Path | None = None
    root: Path | None = None
    tile: int | None = None
    illumination: str = schema_default(f"{_KEY}.illumination")
    illumination_sigma: float = schema_default(f"{_KEY}.illumination_sigma")
    normalize: str = schema_default(f"{_KEY}.normalize")
    plate_column: str | tuple[str, ...] = schema_default(f"{_KEY}.plate_column")
    id_column: str = schema_default(f"{_KEY}.id_column")

    @classmethod
    def from_config(cls, section: Mapping[str, Any], base_dir: PathLike = ".") -> ImageSource:
        """The ``microscopy.images`` mapping; relative paths are taken from ``base_dir``."""
        base = Path(base_dir)

        def path(key: str) -> Path | None:
            return base / section[key] if section.get(key) is not None else None

        # The schema fills no defaults in this section (one of two forms): the class has them.
        optional = ("illumination", "illumination_sigma", "normalize", "plate_column", "id_column")
        given = {k: section[k] for k in optional if k in section}
        if "plate_column" in given:
            given["plate_column"] = _names(given["plate_column"])
        source = cls(
            channels=tuple(str(c) for c in section["channels"]),
            load_data=path("load_data"),
            files=section.get("files"),
            metadata=path("metadata"),
            root=path("root"),
            tile=section.get("tile"),
            **given,
        )
        if (source.load_data is None) == (source.files is None):
            raise ValueError(
                "microscopy.images: give either load_data (a LoadData CSV) or files (a file "
                "name pattern) with metadata, not both and not neither"
            )
        if source.files is not None and source.metadata is None:
            raise ValueError("microscopy.images.metadata: a table is needed with files")
        return source

    @property
    def table(self) -> Path:
        """The CSV that lists the images (for error messages)."""
        return self.load_data if self.load_data is not None else self.metadata


def _names(value: str | Sequence[str]) -> str | tuple[str, ...]:
    return value if isinstance(value, str) else tuple(value)


def _read_table(path: Path, key: str) -> pd.DataFrame:
    """A listing CSV with every cell read as written (`readers.read_csv_as_written`): plate
    "01", gene "None" and folder "007" stay what they are."""
    from cellconcepts.store.readers import read_csv_as_written

    if not path.is_file():
        raise FileNotFoundError(f"microscopy.images.{key}: {path} does not exist")
    return read_csv_as_written(path)


def _file_name(pattern: str, record: Mapping[str, Any], **more: Any) -> str:
    """``pattern`` filled with a metadata row; a number format such as ``{site:02d}`` gets the
    number its cell holds."""
    try:
        return pattern.format(**record, **more)
    except ValueError:
        return pattern.format(**{k: _number(v) for k, v in record.items()}, **more)


def _number(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value


def _load_data_files(source: ImageSource) -> tuple[pd.DataFrame, list[list[Path]]]:
    """A LoadData CSV: ``FileName_<channel>`` and ``PathName_<channel>`` per channel (paths
    relative to the CSV's folder, or ``root``), ``Metadata_*`` columns as labels."""
    table = _read_table(source.load_data, "load_data")
    found = sorted(c.removeprefix("FileName_") for c in table if c.startswith("FileName_"))
    root = source.root or source.load_data.parent
    columns = []
    for channel in source.channels:
        for prefix in ("FileName_", "PathName_"):
            if prefix + channel not in table:
                raise ValueError(
                    f"{source.load_data}: no column {prefix + channel} for channel {channel!r} "
                    f"(microscopy.images.channels); the CSV has channels {found}"
                )
        columns.append(
            [
                root / str(folder) / str(name)
                for folder, name in zip(
                    table["PathName_" + channel], table["FileName_" + channel], strict=True
                )
            ]
        )
    metadata = table[[c for c in table if c.startswith(METADATA_PREFIX)]]
    metadata = metadata.rename(columns=lambda c: c.removeprefix(METADATA_PREFIX))
    return metadata.reset_index(drop=True), [list(files) for files in zip(*columns, strict=True)]


def _pattern_files(source: ImageSource) -> tuple[pd.DataFrame, list[list[Path]]]:
    """File names from a pattern over the metadata's columns; with ``{channel}`` one file per
    channel, without it one file holding every channel."""
    table = _read_table(source.metadata, "metadata")
    fields = {name for _, name, _, _ in string.Formatter().parse(source.files) if name}
    missing = sorted(fields - set(table.columns) - {"channel"})
    if missing:
        raise ValueError(
            f"microscopy.images.files: the pattern {source.files!r} uses {missing}, which are "
            f"not columns of {source.metadata} (columns: {list(table.columns)})"
        )
    root = source.root or source.metadata.parent
    per_channel = "channel" in fields
    rows = []
    for record in table.to_dict("records"):
        if per_channel:
            rows.append(
                [root / _file_name(source.files, record, channel=c) for c in source.channels]
            )
        else:
            rows.append([root / _file_name(source.files, record)])
    return table.reset_index(drop=True), rows


def list_images(source: ImageSource) -> tuple[pd.DataFrame, list[list[Path]]]:
    """(metadata, files): one metadata row per image and, per image, its file per channel (or
    its one multi-channel file)."""
    return _load_data_files(source) if source.load_data is not None else _pattern_files(source)


def _read_file(path: Path, where: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({where})")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            image = tifffile.imread(path)
        else:
            import imageio.v3 as iio

            image = iio.imread(path)
    except Exception as err:  # each reader raises its own kinds for a damaged file
        raise ValueError(f"{path}: not a readable image ({where}): {err}") from err
    if image.size == 0:  # tifffile reads some damaged files as an empty array, with a warning
        raise ValueError(f"{path}: not a readable image ({where}): no pixel data")
    return image


def read_image(files: Sequence[Path], channels: Sequence[str], where: str) -> np.ndarray:
    """One image (C, H, W) from its per-channel files or its one multi-channel file
    ((C, H, W) or (H, W, C))."""
    if len(files) == len(channels):
        planes = []
        for path, channel in zip(files, channels, strict=True):
            plane = _read_file(path, f"{where}, channel {channel}")
            if plane.ndim != 2:
                raise ValueError(
                    f"{path}: expected a single-channel 2-D image for channel {channel!r} "
                    f"({where}), got shape {plane.shape}"
                )
            planes.append(plane)
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            raise ValueError(f"{where}: channels differ in size: {sorted(shapes)}")
        return np.stack(planes)
    (path,) = files
    image = _read_file(path, where)
    if image.ndim == 3 and image.shape[0] == len(channels):
        return image
    if image.ndim == 3 and image.shape[-1] == len(channels):
        return np.moveaxis(image, -1, 0)
    count = image.shape[0] if image.ndim == 3 else (1 if image.ndim == 2 else image.shape)
    raise ValueError(
        f"{path}: {count} channels (shape {image.shape}), expected {len(channels)} "
        f"({', '.join(channels)}; microscopy.images.channels) ({where})"
    )


@dataclass
class _Screen:
    source: ImageSource
    metadata: pd.DataFrame
    files: list[list[Path]]

    def where(self, row: int) -> str:
        return f"row {row + 1} of {self.source.table}"

    def read(self, row: int) -> np.ndarray:
        return read_image(self.files[row], self.source.channels, self.where(row))

    def plates(self) -> Iterator[np.ndarray]:
        """Row numbers plate by plate (in order of first appearance; all rows when the table
        has no plate column)."""
        columns = self.source.plate_column
        columns = [columns] if isinstance(columns, str) else list(columns)
        if not set(columns) <= set(self.metadata.columns):
            yield np.arange(len(self.metadata))
            return
        codes, _ = pd.factorize(pd.MultiIndex.from_frame(self.metadata[columns]))
        for code in range(codes.max() + 1):
            yield np.flatnonzero(codes == code)


def _illumination_function(images: Iterator[np.ndarray], sigma: float) -> np.ndarray:
    """Per channel: the mean image of a plate, Gaussian-smoothed (sigma a fraction of the image
    side), scaled to mean 1 (the usual "Regular, all images" illumination function of
    CellProfiler's CorrectIlluminationCalculate, with Gaussian smoothing)."""
    from scipy.ndimage import gaussian_filter

    total, count = None, 0
    for image in images:
        total = image.astype(np.float64) if total is None else total + image
        count += 1
    mean = total / count
    width = sigma * max(mean.shape[1:])
    smooth = np.stack([gaussian_filter(plane, width, mode="nearest") for plane in mean])
    smooth /= smooth.mean(axis=(1, 2), keepdims=True)
    return np.maximum(smooth, 1e-6)


def _tiles(image: np.ndarray, size: int | None) -> list[tuple[int, int, np.ndarray]]:
    if size is None:
        return [(0, 0, image)]
    _, height, width = image.shape
    return [
        (y, x, image[:, y : y + size, x : x + size])
        for y in range(0, height, size)
        for x in range(0, width, size)
    ]


def _check_first(image: np.ndarray, source: ImageSource, where: str) -> None:
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"{where}: images must hold integers or floats, got {image.dtype}")
    if source.tile is not None and (image.shape[1] % source.tile or image.shape[2] % source.tile):
        raise ValueError(
            f"microscopy.images.tile: {source.tile} does not divide the images' size "
            f"{image.shape[1]}x{image.shape[2]} ({where})"
        )


def import_images(source: ImageSource, store: ImageFiles) -> pd.DataFrame:
    """Write the image store of ``source``; returns its obs (one row per image or tile)."""
    metadata, files = list_images(source)
    if not len(files):
        raise ValueError(f"{source.table}: lists no images")
    screen = _Screen(source, metadata, files)
    first = screen.read(0)
    _check_first(first, source, screen.where(0))
    corrected = source.illumination != "none" or source.normalize != "none"
    dtype = np.dtype(np.float32) if corrected else first.dtype
    tiles = _tiles(first, source.tile)
    shape = (len(files) * len(tiles), *tiles[0][2].shape)
    store.images.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(files), desc="importing images", unit="image")
    with atomic_path(store.images) as tmp, open(tmp, "wb") as handle:
        writer = NpyRowWriter(handle, shape, dtype)
        for plate_rows in screen.plates():
            illumination = scale = None
            if source.illumination == "plate":
                images = (screen.read(int(r)) for r in plate_rows)
                illumination = _illumination_function(images, source.illumination_sigma)
            if source.normalize == "plate":
                medians = [
                    np.median(_corrected(screen.read(int(r)), illumination), axis=(1, 2))
                    for r in plate_rows
                ]
                scale = np.maximum(np.median(medians, axis=0), 1e-12)[:, None, None]
            for r in plate_rows:
                row = int(r)
                image = screen.read(row)
                if image.shape != first.shape:
                    raise ValueError(
                        f"{screen.where(row)}: image of shape {image.shape}, expected "
                        f"{first.shape} like row 1"
                    )
                if corrected:
                    image = _corrected(image, illumination)
                    if scale is not None:
                        image = image / scale
                elif image.dtype != dtype:
                    raise ValueError(
                        f"{screen.where(row)}: pixels of type {image.dtype}, expected {dtype} "
                        "like row 1"
                    )
                writer.write(np.stack([tile for _, _, tile in _tiles(image, source.tile)]))
                bar.update(1)
        writer.close()
        bar.close()
        # written plate by plate: the obs rows follow that order
        obs = _obs(screen, [int(r) for plate in screen.plates() for r in plate], tiles)
    write_frame(obs, store.obs)
    log.info(
        "imported %d images (%s) from %s into %d store images %s",
        len(files),
        ", ".join(source.channels),
        source.table,
        shape[0],
        shape[1:],
    )
    return obs


def _corrected(image: np.ndarray, illumination: np.ndarray | None) -> np.ndarray:
    image = image.astype(np.float32)
    return image if illumination is None else image / illumination.astype(np.float32)


def _obs(
    screen: _Screen, order: list[int], tiles: list[tuple[int, int, np.ndarray]]
) -> pd.DataFrame:
    """One row per stored image: the metadata, the source files, and the tile's position."""
    table = screen.metadata.iloc[order].reset_index(drop=True)
    names = screen.source.channels if len(screen.files[0]) > 1 else ("all",)
    for i, name in enumerate(names):
        table[f"file_{name}"] = [str(screen.files[r][i]) for r in order]
    id_column = screen.source.id_column
    ids = (
        table[id_column].astype(str)
        if id_column in table
        else pd.Series([f"image{r:07d}" for r in order])
    )
    repeated_ids = ids[ids.duplicated()]
    if len(repeated_ids):
        raise ValueError(
            f"{screen.source.table}: image_id must be unique; repeated: "
            f"{repeated_ids.head(5).tolist()}"
        )
    if len(tiles) == 1:
        table["image_id"] = ids
        return table
    repeated = table.loc[table.index.repeat(len(tiles))].reset_index(drop=True)
    k = np.tile(np.arange(len(tiles)), len(table))
    repeated["source_image_id"] = np.repeat(ids.to_numpy(), len(tiles))
    repeated["tile_y"] = np.array([y for y, _, _ in tiles])[k]
    repeated["tile_x"] = np.array([x for _, x, _ in tiles])[k]
    repeated["image_id"] = [
        f"{i}_t{t}" for i, t in zip(repeated["source_image_id"], k, strict=True)
    ]
    return repeated
