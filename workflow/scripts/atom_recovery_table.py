from cellconcepts.stages import run
from cellconcepts.stages.report import atom_recovery_table

run(atom_recovery_table, snakemake)
