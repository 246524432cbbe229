from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_microscopy import heatmap_patch_tokens

with log_to_file(snakemake.log[0]):
    heatmap_patch_tokens(
        Path(snakemake.input.images).parent,
        snakemake.input.encoder,
        snakemake.params.architecture,
        snakemake.input.choice,
        Path(snakemake.input.tokens).parent,
        snakemake.input.codes,
        snakemake.input.best_selectivity,
        snakemake.output.tokens,
        snakemake.output.selected,
        task=snakemake.params.task,
        exclude=snakemake.params.heatmaps["exclude"],
        images_per_label=snakemake.params.heatmaps["images_per_label"],
        batch_size=snakemake.params.batch_size,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
