from cellconcepts.stages import run
from cellconcepts.stages.train import train_dictionary

run(train_dictionary, snakemake)
