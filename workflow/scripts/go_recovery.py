import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_enrich import go_recovery_table

with log_to_file(snakemake.log[0]):
    variants = snakemake.params.variants
    go_recovery_table(
        best_selectivity=dict(zip(variants, snakemake.input.best_selectivity, strict=True)),
        enrichment=dict(zip(variants, snakemake.input.enrichment, strict=True)),
        groups_path=snakemake.input.groups,
        group_task=snakemake.params.group_task,
        fdr=snakemake.params.settings["fdr"],
        table_path=snakemake.output.table,
        summary_path=snakemake.output.summary[0],
    )
