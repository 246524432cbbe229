from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_enrich import enrich_model

with log_to_file(snakemake.log[0]):
    enrich_model(
        store_dir=Path(snakemake.input.tokens).parent,
        codes_path=snakemake.input.codes,
        dataset=snakemake.params.dataset,
        settings=snakemake.params.settings,
        expression_source=snakemake.params.expression_source,
        gene_sets_path=snakemake.input.get("gene_sets"),
        variant=snakemake.params.variant,
        outputs=dict(snakemake.output.items()),
    )
