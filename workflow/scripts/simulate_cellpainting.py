from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_microscopy import simulate_cellpainting

with log_to_file(snakemake.log[0]):
    simulate_cellpainting(snakemake.params.simulation, Path(snakemake.output.images).parent)
