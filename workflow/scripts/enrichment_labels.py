import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_enrich import label_terms_table

with log_to_file(snakemake.log[0]):
    variants = snakemake.params.variants
    settings = snakemake.params.settings
    label_terms_table(
        best_selectivity=dict(zip(variants, snakemake.input.best_selectivity, strict=True)),
        enrichment=dict(zip(variants, snakemake.input.enrichment, strict=True)),
        label_task=snakemake.params.label_task,
        labels=settings["labels"],
        top_terms=settings["top_terms"],
        table_path=snakemake.output[0],
    )
