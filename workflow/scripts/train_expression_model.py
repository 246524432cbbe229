from cellconcepts.stages import run
from cellconcepts.stages.embed import train_expression_model

run(train_expression_model, snakemake)
