from cellconcepts.stages import run
from cellconcepts.stages.report import feature_browser

run(feature_browser, snakemake)
