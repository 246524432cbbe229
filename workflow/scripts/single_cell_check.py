from cellconcepts.stages import run
from cellconcepts.stages.heatmaps import single_cell_check

run(single_cell_check, snakemake)
