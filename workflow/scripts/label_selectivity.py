import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_microscopy import label_selectivity_table

with log_to_file(snakemake.log[0]):
    label_selectivity_table(
        dict(zip(snakemake.params.variants, snakemake.input, strict=True)),
        snakemake.output.table,
        task=snakemake.params.heatmaps["task"],
        exclude=snakemake.params.heatmaps["exclude"],
    )
