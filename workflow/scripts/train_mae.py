from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_microscopy import train_image_mae

with log_to_file(snakemake.log[0]):
    train_image_mae(
        Path(snakemake.input.images).parent,
        snakemake.params.architecture,
        snakemake.params.mae,
        snakemake.output.encoder,
        snakemake.output.history,
        snakemake.params.checkpoint,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
