from cellconcepts.stages import run
from cellconcepts.stages.enrich import enrichment_umap

run(enrichment_umap, snakemake)
