from cellconcepts.stages import run
from cellconcepts.stages.cellprofiler import cellprofiler_threshold

run(cellprofiler_threshold, snakemake)
