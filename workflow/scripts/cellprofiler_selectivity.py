from cellconcepts.stages import run
from cellconcepts.stages.cellprofiler import cellprofiler_selectivity

run(cellprofiler_selectivity, snakemake)
