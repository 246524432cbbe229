from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import encode_store

with log_to_file(snakemake.log[0]):
    encode_store(
        Path(snakemake.input.tokens).parent,
        snakemake.input.whitening,
        snakemake.input.model,
        codes_path=snakemake.output.codes,
        reconstruction_path=snakemake.output.reconstructions,
        cosine_path=snakemake.output.cosine,
        batch_size=snakemake.params.batch_size,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
