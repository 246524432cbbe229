from cellconcepts.stages import run
from cellconcepts.stages.enrich import enrich_model

run(enrich_model, snakemake)
