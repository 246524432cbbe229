from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import simulate_superposition_store

with log_to_file(snakemake.log[0]):
    simulate_superposition_store(
        snakemake.params.simulation,
        store_dir=Path(snakemake.output.tokens).parent,
        ground_truth_dir=Path(snakemake.output.atoms).parent,
    )
