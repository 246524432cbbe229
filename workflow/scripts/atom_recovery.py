from cellconcepts.stages import run
from cellconcepts.stages.evaluate import atom_recovery

run(atom_recovery, snakemake)
