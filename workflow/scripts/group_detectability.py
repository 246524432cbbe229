from cellconcepts.stages import run
from cellconcepts.stages.evaluate import group_detectability

run(group_detectability, snakemake)
