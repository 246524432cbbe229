from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_cellprofiler import segmentation_stage

with log_to_file(snakemake.log[0]):
    segmentation_stage(
        snakemake.input.masks,
        Path(snakemake.input.images).parent,
        iou_threshold=snakemake.params.iou_threshold,
        per_image_path=snakemake.output.per_image,
        summary_path=snakemake.output.summary,
    )
