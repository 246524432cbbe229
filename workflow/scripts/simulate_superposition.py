from cellconcepts.stages import run
from cellconcepts.stages.simulate import simulate_superposition

run(simulate_superposition, snakemake)
