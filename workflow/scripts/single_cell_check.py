from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_microscopy import single_cell_alignment

with log_to_file(snakemake.log[0]):
    single_cell_alignment(
        Path(snakemake.input.images).parent,
        snakemake.input.tokens,
        snakemake.input.selected,
        snakemake.input.model,
        snakemake.input.whitening,
        cells_path=snakemake.output.cells,
        per_image_path=snakemake.output.per_image[0],
        summary_path=snakemake.output.summary[0],
        figure_path=snakemake.output.figure,
    )
