from cellconcepts.stages import run
from cellconcepts.stages.embed import import_images

run(import_images, snakemake)
