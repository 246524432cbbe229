from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import embed_scrna_store

with log_to_file(snakemake.log[0]):
    scrna = snakemake.params.scrna
    embed_scrna_store(
        scrna["source"],
        scrna["embedding"],
        Path(snakemake.output.tokens).parent,
        model_path=snakemake.input.get("model"),
        control=snakemake.params.control,
        split=snakemake.params.split,
        tasks=snakemake.params.tasks,
    )
