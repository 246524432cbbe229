"""cellconcepts: sparse concepts from biology foundation-model embeddings.

Run the embedded demo with `snakemake --cores all`; see README.md and config/README.md.
"""

from snakemake.utils import min_version, validate

min_version("8.20")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/whiten.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/heatmaps.smk"
include: "workflow/rules/cellprofiler.smk"
include: "workflow/rules/enrich.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
