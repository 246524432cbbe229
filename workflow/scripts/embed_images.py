from cellconcepts.stages import run
from cellconcepts.stages.embed import embed_images

run(embed_images, snakemake)
