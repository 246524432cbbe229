from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_enrich import enrichment_umap

with log_to_file(snakemake.log[0]):
    enrichment_umap(
        store_dir=Path(snakemake.input.tokens).parent,
        codes_path=snakemake.input.codes,
        annotation_path=snakemake.input.annotation,
        umap_path=snakemake.input.umap,
        dataset=snakemake.params.dataset,
        settings=snakemake.params.settings,
        label_task=snakemake.params.label_task,
        variant=snakemake.params.variant,
        png_path=snakemake.output.png,
    )
