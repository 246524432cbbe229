import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import atom_recovery_table

with log_to_file(snakemake.log[0]):
    atom_recovery_table(
        snakemake.input.model,
        snakemake.input.whitening,
        snakemake.input.atoms,
        snakemake.input.atom_table,
        snakemake.output[0],
        threshold=snakemake.params.threshold,
    )
