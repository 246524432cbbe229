from cellconcepts.stages import run
from cellconcepts.stages.cellprofiler import cellprofiler_comparison

run(cellprofiler_comparison, snakemake)
