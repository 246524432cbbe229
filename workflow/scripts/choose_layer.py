from cellconcepts.stages import run
from cellconcepts.stages.embed import choose_layer

run(choose_layer, snakemake)
