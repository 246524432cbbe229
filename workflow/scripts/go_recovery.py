from cellconcepts.stages import run
from cellconcepts.stages.enrich import go_recovery

run(go_recovery, snakemake)
