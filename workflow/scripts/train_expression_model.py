import _package_path  # noqa: F401  (must come first)

from cellconcepts.logs import log_to_file
from cellconcepts.pipeline import train_expression_model

with log_to_file(snakemake.log[0]):
    train_expression_model(
        snakemake.params.source,
        snakemake.params.autoencoder,
        snakemake.output.model,
        snakemake.output.history,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
