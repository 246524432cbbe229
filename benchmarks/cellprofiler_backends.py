"""Seconds per image of the two CellProfiler backends on the same simulated images, side by side.

    python benchmarks/cellprofiler_backends.py --images 24 \
        --executable .cellprofiler-venv/bin/cellprofiler

Both segment and measure the same 64-px, 6-channel crops (about 8 cells each) with the shipped
parameters; the real CellProfiler's time includes writing the TIFFs and starting CellProfiler
once for the whole set, as one workflow chunk does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cellconcepts.cellprofiler import cp_measure as cp_measure_backend
from cellconcepts.cellprofiler import headless as cellprofiler
from cellconcepts.sources import cellpainting

PIPELINE = (
    Path(__file__).resolve().parents[1] / "resources" / "cellprofiler" / "cellpainting.cppipe"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--executable", default=None, help="cellprofiler (default: on PATH)")
    args = parser.parse_args()
    screen = cellpainting.simulate_screen(
        n_cell_types=1, plates_per_cell_type=1, sites_per_well=4, seed=0, progress=False
    )
    rows = np.arange(min(args.images, len(screen.images)))
    images = np.asarray(screen.images[rows])
    ids = screen.obs.image_id.to_numpy()[rows]
    channels = list(cellpainting.CHANNELS)

    # warm-up: numba compiles cp-measure's kernels on first use
    cp_measure_backend.measure_images(
        images[:2], ids[:2], rows[:2], channels, nucleus_channel="nucleus", cytoplasm_channel="er"
    )
    start = time.perf_counter()
    cells, _ = cp_measure_backend.measure_images(
        images, ids, rows, channels, nucleus_channel="nucleus", cytoplasm_channel="er"
    )
    cp_measure = (time.perf_counter() - start) / len(rows)
    print(f"cp-measure:    {cp_measure:.3f} s/image ({len(cells)} cells, {len(rows)} images)")

    executable = cellprofiler.find_executable(args.executable)
    if executable is None:
        print("CellProfiler: not installed (scripts/install_cellprofiler.sh)")
        return
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        cells, _ = cellprofiler.measure_images(
            images,
            ids,
            rows,
            channels,
            executable=executable,
            pipeline=PIPELINE,
            work_dir=Path(work) / "cp",
        )
        real = (time.perf_counter() - start) / len(rows)
    print(f"CellProfiler:  {real:.3f} s/image ({len(cells)} cells)")
    print(f"CellProfiler / cp-measure: {real / cp_measure:.1f}x")


if __name__ == "__main__":
    main()
