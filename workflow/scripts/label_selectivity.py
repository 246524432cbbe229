from cellconcepts.stages import run
from cellconcepts.stages.report import label_selectivity

run(label_selectivity, snakemake)
