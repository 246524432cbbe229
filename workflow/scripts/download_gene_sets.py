from cellconcepts.stages import run
from cellconcepts.stages.enrich import download_gene_sets

run(download_gene_sets, snakemake)
