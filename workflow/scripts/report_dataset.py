from cellconcepts.stages import run
from cellconcepts.stages.report import report_dataset

run(report_dataset, snakemake)
