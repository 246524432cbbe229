"""Shared by every .smk file of workflow/rules. The config checks; the results layout (`paths`);
the workflow's plan for this config (`plan`, each dataset's stages and the input functions and
params of the rules); the report's figure and table outputs.

Snakemake puts the folder of workflow/Snakefile on sys.path while parsing it, so the
cellconcepts package beside the rules imports as it is; the jobs' scripts find the same package
through PYTHONPATH, set below.
"""

import json
from pathlib import Path

from snakemake.logging import logger

import cellconcepts
from cellconcepts.config import (
    check_config,
    dictionary_settings,
    enrichment_mode,
    enrichment_settings,
    enrichment_variants,
    input_source,
    training_settings,
)
from cellconcepts.device import gpu_present
from cellconcepts.layout import ResultsLayout
from cellconcepts.plan import WorkflowPlan
from cellconcepts.report.figures import DATASET_FIGURES
from cellconcepts.report.tables import DATASET_TABLES
from cellconcepts.store import layout
from cellconcepts.variant import Variant

# Jobs run `workflow/scripts/<rule>.py` in a fresh Python (possibly in a conda env): they import
# the same cellconcepts package as this Snakefile.
cellconcepts.share_with_jobs()

# The local profile runs one GPU job at a time (`resources: gpu: 1`). Without a GPU here those
# jobs run on CPU, one thread each, and the limit would only keep them from running side by
# side (CHANGELOG.md, its 2026-11-30 entries). A cluster's login node may have no GPU either;
# lifting a limit there changes nothing, since each job gets its own node.
if "gpu" in workflow.global_resources and not gpu_present():
    workflow.register_resource("gpu", 10**6)
    logger.info(
        "No GPU on this machine: jobs that could use one run on CPU, side by side."
    )

# Input paths in the config are relative to the working directory, as Snakemake resolves them.
# Settings that run but are probably not what was meant are said once, in the main log.
# Every config file read (the Snakefile's and --configfile ones) is checked for keys given twice.
for warning in check_config(
    config,
    Path.cwd(),
    workflow.source_path("../schemas/config.schema.yaml"),
    workflow.configfiles,
):
    logger.warning(f"config: {warning}")

# Every result path: templates with the wildcards below, or filled in by the input functions.
paths = ResultsLayout(config["results"])
# Which stages each dataset runs, and the rules' input functions and params (cellconcepts.plan).
plan = WorkflowPlan(config, paths)
DATASETS = config["datasets"]
ENV = "../../envs/cellconcepts.yaml"
TABLE_TEXT = (".csv", ".md", ".tex")
FIGURE = (".png", ".pdf")


wildcard_constraints:
    **Variant.wildcard_constraints(),
    dataset="|".join(DATASETS),


def figure_files(prefix, caption, subcategory):
    """A figure's PNG and PDF (multiext); the PNG goes into `snakemake --report`, filed under
    its dataset and stage."""
    png, pdf = multiext(prefix, *FIGURE)
    shown = report(png, caption=caption, category="{dataset}", subcategory=subcategory)
    return [shown, pdf]


def table_files(prefix, caption, subcategory):
    """A table's CSV, Markdown and LaTeX versions (multiext); the CSV goes into the report."""
    csv, md, tex = multiext(prefix, *TABLE_TEXT)
    shown = report(csv, caption=caption, category="{dataset}", subcategory=subcategory)
    return [shown, md, tex]


def validation_warnings():
    """The warnings of every dataset's validate_dataset job, for the main log."""
    for dataset in DATASETS:
        path = Path(paths.validation(dataset))
        if path.is_file():
            for warning in json.loads(path.read_text()).get("warnings", []):
                logger.warning(f"validate_dataset ({dataset}): {warning}")
