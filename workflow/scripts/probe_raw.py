from cellconcepts.stages import run
from cellconcepts.stages.evaluate import probe_raw

run(probe_raw, snakemake)
