from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_cellprofiler import measure_chunk

with log_to_file(snakemake.log[0]):
    measure_chunk(
        Path(snakemake.input.images).parent,
        int(snakemake.wildcards.chunk),
        snakemake.params.n_chunks,
        snakemake.params.settings,
        cells_path=snakemake.output.cells,
        masks_path=snakemake.output.masks,
        timing_path=snakemake.output.timing,
        work_dir=snakemake.params.work_dir,
    )
