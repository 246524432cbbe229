from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.report import build_dataset_report

with log_to_file(snakemake.log[0]):
    build_dataset_report(
        snakemake.wildcards.dataset,
        snakemake.params.variants,
        snakemake.params.tasks,
        raw_probing=snakemake.input.raw_probing,
        metrics=snakemake.input.metrics,
        dead=snakemake.input.dead,
        cosine=snakemake.input.cosine,
        selectivity_counts=snakemake.input.selectivity_counts,
        best_selectivity=snakemake.input.best_selectivity,
        probing=snakemake.input.probing,
        atom_recovery=snakemake.input.get("atom_recovery"),
        headline_path=snakemake.output.headline,
        tables_dir=Path(snakemake.output.tables[0]).parent,
        figures_dir=Path(snakemake.output.figures[0]).parent,
    )
