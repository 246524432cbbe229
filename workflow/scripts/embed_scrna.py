from cellconcepts.stages import run
from cellconcepts.stages.embed import embed_scrna

run(embed_scrna, snakemake)
