from cellconcepts.stages import run
from cellconcepts.stages.cellprofiler import cellprofiler_segmentation

run(cellprofiler_segmentation, snakemake)
