from cellconcepts.stages import run
from cellconcepts.stages.heatmaps import token_heatmaps

run(token_heatmaps, snakemake)
