from cellconcepts.stages import run
from cellconcepts.stages.simulate import simulate_cellpainting

run(simulate_cellpainting, snakemake)
