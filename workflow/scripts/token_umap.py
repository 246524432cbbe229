from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_enrich import token_umap

with log_to_file(snakemake.log[0]):
    token_umap(Path(snakemake.input.tokens).parent, snakemake.output[0])
