from cellconcepts.stages import run
from cellconcepts.stages.report import paper_map

run(paper_map, snakemake)
