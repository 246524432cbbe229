from cellconcepts.stages import run
from cellconcepts.stages.cellprofiler import cellprofiler_measure

run(cellprofiler_measure, snakemake)
