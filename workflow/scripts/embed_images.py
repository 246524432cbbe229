from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_microscopy import embed_image_layers

with log_to_file(snakemake.log[0]):
    embed_image_layers(
        Path(snakemake.input.images).parent,
        snakemake.input.encoder,
        snakemake.params.architecture,
        snakemake.params.layer,
        snakemake.output[0],
        batch_size=snakemake.params.batch_size,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
