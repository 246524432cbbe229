from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_cellprofiler import threshold_stage

section = snakemake.params.section
with log_to_file(snakemake.log[0]):
    threshold_stage(
        snakemake.input.profiles,
        Path(snakemake.input.tokens).parent,
        reference=section["reference"],
        target=section["target_active"],
        sweep_targets=section["sweep"],
        task=snakemake.params.task,
        codes_path=snakemake.output.codes,
        thresholds_path=snakemake.output.thresholds,
        sweep_path=snakemake.output.sweep,
    )
