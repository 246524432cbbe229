from cellconcepts.stages import run
from cellconcepts.stages.encode import encode_tokens

run(encode_tokens, snakemake)
