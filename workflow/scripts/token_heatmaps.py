from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_microscopy import token_heatmaps

with log_to_file(snakemake.log[0]):
    token_heatmaps(
        Path(snakemake.input.images).parent,
        snakemake.input.tokens,
        snakemake.input.selected,
        snakemake.input.model,
        snakemake.input.whitening,
        channels_path=snakemake.output.channels[0],
        summary_path=snakemake.output.summary[0],
        figure_path=snakemake.output.figure,
    )
