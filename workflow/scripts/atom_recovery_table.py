import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.report import collect, write_table

with log_to_file(snakemake.log[0]):
    table = collect(dict(zip(snakemake.params.variants, snakemake.input, strict=True)))
    write_table(table, snakemake.output[0], caption=f"{snakemake.wildcards.dataset}: atom recovery")
