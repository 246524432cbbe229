from cellconcepts.stages import run
from cellconcepts.stages.evaluate import feature_cosines

run(feature_cosines, snakemake)
