from cellconcepts.stages import run
from cellconcepts.stages.validate import validate_dataset

run(validate_dataset, snakemake)
