from cellconcepts.stages import run
from cellconcepts.stages.evaluate import selectivity_references

run(selectivity_references, snakemake)
