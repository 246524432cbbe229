from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline_microscopy import choose_layer_store

with log_to_file(snakemake.log[0]):
    choose_layer_store(
        snakemake.input.layers,
        Path(snakemake.input.images).parent,
        Path(snakemake.output.tokens).parent,
        layer=snakemake.params.layer,
        layer_task=snakemake.params.layer_task,
        tasks=snakemake.params.tasks,
        control=snakemake.params.control,
        split=snakemake.params.split,
        probe=snakemake.params.probe,
        table_path=snakemake.output.table[0],
        figure_path=snakemake.output.figure,
        choice_path=snakemake.output.choice,
        threads=snakemake.threads,
    )
