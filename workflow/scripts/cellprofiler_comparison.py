import _package_path  # noqa: F401  (must come first)

from cellconcepts.cp_comparison import compare
from cellconcepts.logs import log_to_file

variants = snakemake.params.variants
with log_to_file(snakemake.log[0]):
    compare(
        snakemake.input.cp_best,
        dict(zip(variants, snakemake.input.best, strict=True)),
        dict(zip(variants, snakemake.input.codes, strict=True)),
        snakemake.input.sweep,
        task=snakemake.params.task,
        per_label_path=snakemake.output.per_label,
        correlation_path=snakemake.output.correlation,
        sparsity_path=snakemake.output.sparsity[0],
        figure_path=snakemake.output.figure,
    )
