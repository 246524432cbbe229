from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import train_variant

with log_to_file(snakemake.log[0]):
    train_variant(
        Path(snakemake.input.tokens).parent,
        snakemake.input.whitening,
        snakemake.params.variant,
        snakemake.params.settings,
        model_path=snakemake.output.model,
        metrics_path=snakemake.output.metrics,
        dead_path=snakemake.output.dead,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        threads=snakemake.threads,
    )
