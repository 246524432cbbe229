from cellconcepts.stages import run
from cellconcepts.stages.heatmaps import heatmap_patch_tokens

run(heatmap_patch_tokens, snakemake)
