from cellconcepts.stages import run
from cellconcepts.stages.embed import import_tokens

run(import_tokens, snakemake)
