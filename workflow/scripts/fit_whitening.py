from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import fit_control_whitening

with log_to_file(snakemake.log[0]):
    fit_control_whitening(
        Path(snakemake.input.tokens).parent,
        snakemake.wildcards.whitening,
        snakemake.output[0],
        eps_relative=snakemake.params.eps_relative,
        n_components=snakemake.params.n_components,
    )
