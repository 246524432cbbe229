from cellconcepts.stages import run
from cellconcepts.stages.evaluate import selectivity

run(selectivity, snakemake)
