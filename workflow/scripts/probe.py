"""Probe raw tokens (rule probe_raw) or a model's codes and reconstructions (rule probe_model)."""

from pathlib import Path

import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import probe_representation

with log_to_file(snakemake.log[0]):
    probe_representation(
        Path(snakemake.input.tokens).parent,
        snakemake.params.tasks,
        snakemake.output[0],
        probe=snakemake.params.probe,
        codes_path=snakemake.input.get("codes"),
        reconstruction_path=snakemake.input.get("reconstructions"),
        threads=snakemake.threads,
    )
