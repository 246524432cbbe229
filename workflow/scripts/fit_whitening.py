from cellconcepts.stages import run
from cellconcepts.stages.whiten import fit_whitening

run(fit_whitening, snakemake)
