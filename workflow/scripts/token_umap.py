from cellconcepts.stages import run
from cellconcepts.stages.enrich import token_umap

run(token_umap, snakemake)
