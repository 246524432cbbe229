from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_cellprofiler import build_profiles

with log_to_file(snakemake.log[0]):
    build_profiles(
        snakemake.input.cells,
        snakemake.input.timing,
        Path(snakemake.input.images).parent,
        how=snakemake.params.aggregate,
        profiles_path=snakemake.output.profiles,
        summary_path=snakemake.output.summary,
    )
