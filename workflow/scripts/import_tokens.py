from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import import_token_store

with log_to_file(snakemake.log[0]):
    import_token_store(
        snakemake.input.embeddings,
        Path(snakemake.output.tokens).parent,
        obsm_key=snakemake.params.obsm_key,
        obs_path=snakemake.input.get("obs_table"),
        embedding_columns=snakemake.params.embedding_columns,
        control=snakemake.params.control,
        split=snakemake.params.split,
        tasks=snakemake.params.tasks,
    )
