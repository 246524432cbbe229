from cellconcepts.stages import run
from cellconcepts.stages.embed import train_mae

run(train_mae, snakemake)
