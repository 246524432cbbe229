from cellconcepts.stages import run
from cellconcepts.stages.evaluate import compare_variants

run(compare_variants, snakemake)
