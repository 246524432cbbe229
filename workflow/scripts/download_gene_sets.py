import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_enrich import download_gene_sets

with log_to_file(snakemake.log[0]):
    download_gene_sets(snakemake.wildcards.library, snakemake.output[0])
