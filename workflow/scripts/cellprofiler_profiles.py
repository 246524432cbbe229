from cellconcepts.stages import run
from cellconcepts.stages.cellprofiler import cellprofiler_profiles

run(cellprofiler_profiles, snakemake)
