"""Run the real CellProfiler headless on images of an image store and read its output.

The images of one chunk are written as 16-bit TIFFs with a LoadData CSV (one row per image,
``FileName_<Image>``/``PathName_<Image>`` per channel, ``Metadata_ImageID`` and
``Metadata_ImageIndex``), CellProfiler runs the shipped pipeline with
``-c -r -p PIPE --data-file CSV -o OUT -e imageio_reader`` (the reader flag keeps Java and its
Bio-Formats download out), and the per-object spreadsheets and label images come back as one
per-cell table in the shared schema (`cp_features`) and a stack of cell label images.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cellconcepts.cellprofiler import schema as cpf
from cellconcepts.files import PathLike

log = logging.getLogger(__name__)


def find_executable(configured: str | None) -> str | None:
    """The CellProfiler executable: the configured path, else `cellprofiler` on PATH."""
    if configured:
        path = Path(configured)
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which("cellprofiler")


def check_pipeline(
    pipeline: PathLike, channels: Sequence[str], nucleus_channel: str, cytoplasm_channel: str
) -> None:
    """The .cppipe must load the configured channels and segment on the configured ones; it
    and the config are edited separately, so a mismatch is named here, before running."""
    text = Path(pipeline).read_text()
    images = set(re.findall(r"Select (?:the )?(?:input )?image(?:s to measure)?:(.*)", text))
    named = {name.strip() for line in images for name in line.split(",")}
    expected = {cpf.image_name(c) for c in channels}
    if not expected <= named:
        raise ValueError(
            f"{pipeline}: measures images {sorted(named)}, but cellprofiler.channels gives "
            f"{sorted(expected)}; regenerate it with resources/cellprofiler/make_pipeline.py"
        )
    for module, channel in (
        ("IdentifyPrimaryObjects", nucleus_channel),
        ("IdentifySecondaryObjects", cytoplasm_channel),
    ):
        block = text.split(f"{module}:", 1)[-1]
        chosen = re.search(r"Select the input image:(.*)", block)
        if chosen is None or chosen.group(1).strip() != cpf.image_name(channel):
            raise ValueError(
                f"{pipeline}: {module} runs on {chosen.group(1).strip() if chosen else None!r}, "
                f"but the config asks for {cpf.image_name(channel)!r} ({channel})"
            )


def write_load_data(
    images: np.ndarray,
    image_ids: Sequence[str],
    image_indices: Sequence[int],
    channels: Sequence[str],
    folder: PathLike,
) -> Path:
    """Write each image's channels as TIFFs and the LoadData CSV naming them; returns the CSV."""
    import tifffile

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for image, image_id, index in zip(images, image_ids, image_indices, strict=True):
        row: dict[str, object] = {
            "Metadata_ImageID": str(image_id),
            "Metadata_ImageIndex": int(index),
        }
        for channel, plane in zip(channels, np.asarray(image), strict=True):
            name = f"{index}_{channel}.tiff"
            tifffile.imwrite(folder / name, np.asarray(plane))
            row[f"FileName_{cpf.image_name(channel)}"] = name
            row[f"PathName_{cpf.image_name(channel)}"] = str(folder)
        rows.append(row)
    csv_path = folder / "images.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return csv_path


def _check_load_data(data_file: Path) -> pd.DataFrame:
    """Every image the LoadData CSV names must exist; a missing one is named with its row."""
    table = pd.read_csv(data_file)
    for column in [c for c in table.columns if c.startswith("FileName_")]:
        folders = table[column.replace("FileName_", "PathName_")]
        for row, (name, folder) in enumerate(zip(table[column], folders, strict=True)):
            if not (Path(folder) / name).is_file():
                raise FileNotFoundError(
                    f"{data_file}: row {row} ({column}) names {Path(folder) / name}, "
                    "which does not exist"
                )
    return table


def run_cellprofiler(
    executable: str, pipeline: PathLike, data_file: PathLike, out_dir: PathLike
) -> None:
    """Run CellProfiler headless; its console output goes to the log. A failure raises an
    error naming the image set CellProfiler was working on."""
    data_file = Path(data_file)
    table = _check_load_data(data_file)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        executable,
        "-c",
        "-r",
        "-p",
        str(pipeline),
        "--data-file",
        str(data_file),
        "-o",
        str(out_dir),
        "-e",
        "imageio_reader",
    ]
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    for line in output.splitlines():
        if "CPU_time" not in line:
            log.info("cellprofiler: %s", line)
    errors = [line for line in output.splitlines() if "ERROR" in line or "Error" in line]
    if result.returncode != 0 or errors:
        image_sets = re.findall(r"Image # (\d+)", output)
        where = ""
        if image_sets and int(image_sets[-1]) <= len(table):
            row = table.iloc[int(image_sets[-1]) - 1]
            files = [
                str(Path(row[f"PathName_{c[9:]}"]) / row[c])
                for c in table
                if c.startswith("FileName_")
            ]
            where = f" on image {row['Metadata_ImageID']} ({', '.join(files)})"
        raise RuntimeError(
            f"CellProfiler failed{where}, run from {data_file} (exit code {result.returncode}): "
            + ("; ".join(errors[:3]) or result.stderr[-500:])
        )


def _object_table(path: Path, obj: str) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CellProfiler wrote no {obj} table")
    table = pd.read_csv(path, dtype={"Metadata_ImageID": str})
    features = [
        c for c in table.columns if cpf.is_feature(c) and c not in ("ImageNumber", "ObjectNumber")
    ]
    renamed = {c: f"{obj}_{cpf.canonical_cellprofiler_name(c)}" for c in features}
    out = table[["Metadata_ImageID", "Metadata_ImageIndex", "ObjectNumber", *features]].rename(
        columns={
            "Metadata_ImageID": "image_id",
            "Metadata_ImageIndex": "image_index",
            "ObjectNumber": "object_number",
            **renamed,
        }
    )
    return out.set_index(["image_index", "object_number"])


def read_cellprofiler_output(
    out_dir: PathLike, image_indices: Sequence[int], shape: tuple[int, int]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-cell table (Cells joined with their Nuclei) and the (n, H, W) cell label images."""
    out_dir = Path(out_dir)
    cells = _object_table(out_dir / f"{cpf.OBJECTS[-1]}.csv", cpf.OBJECTS[-1])
    for obj in cpf.OBJECTS[:-1]:
        other = _object_table(out_dir / f"{obj}.csv", obj).drop(columns="image_id")
        cells = cells.join(other, how="left")
    cells = cells.reset_index()
    cells = cells[["image_id", "image_index", "object_number", *cells.columns[3:]]]
    masks = np.zeros((len(image_indices), *shape), dtype=np.int32)
    import tifffile

    for i, index in enumerate(image_indices):
        label_path = out_dir / "labels" / f"{index}_{cpf.OBJECTS[-1].lower()}.tiff"
        if not label_path.is_file():
            raise FileNotFoundError(f"{label_path}: CellProfiler wrote no cell labels for it")
        masks[i] = tifffile.imread(label_path).astype(np.int32)
    return cells, masks


def measure_images(
    images: np.ndarray,
    image_ids: Sequence[str],
    image_indices: Sequence[int],
    channels: Sequence[str],
    *,
    executable: str,
    pipeline: PathLike,
    work_dir: PathLike,
    nucleus_channel: str = "nucleus",
    cytoplasm_channel: str = "er",
) -> tuple[pd.DataFrame, np.ndarray]:
    """Segment and measure images with the real CellProfiler (work_dir is removed after)."""
    check_pipeline(pipeline, channels, nucleus_channel, cytoplasm_channel)
    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    try:
        data_file = write_load_data(images, image_ids, image_indices, channels, work_dir / "input")
        run_cellprofiler(executable, pipeline, data_file, work_dir / "output")
        return read_cellprofiler_output(work_dir / "output", image_indices, images.shape[2:])
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
