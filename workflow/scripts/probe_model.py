from cellconcepts.stages import run
from cellconcepts.stages.evaluate import probe_model

run(probe_model, snakemake)
