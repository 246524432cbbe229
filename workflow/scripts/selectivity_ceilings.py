from cellconcepts.stages import run
from cellconcepts.stages.evaluate import selectivity_ceilings

run(selectivity_ceilings, snakemake)
