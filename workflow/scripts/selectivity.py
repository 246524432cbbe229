from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import selectivity_tables

with log_to_file(snakemake.log[0]):
    selectivity_tables(
        Path(snakemake.input.tokens).parent,
        snakemake.input.codes,
        snakemake.params.tasks,
        thresholds=snakemake.params.thresholds,
        counts_path=snakemake.output.counts,
        best_path=snakemake.output.best,
    )
