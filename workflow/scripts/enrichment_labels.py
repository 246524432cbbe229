from cellconcepts.stages import run
from cellconcepts.stages.enrich import enrichment_labels

run(enrichment_labels, snakemake)
