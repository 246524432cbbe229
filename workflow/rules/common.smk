"""Paths, input functions and per-rule settings shared by the rule files; the config checks that
need more than the schema.

Snakemake puts the folder of workflow/Snakefile on sys.path while parsing it, so the
cellconcepts package beside the rules imports as it is; the jobs' scripts find the same package
through PYTHONPATH, set below.
"""

import json
import os
from dataclasses import fields
from pathlib import Path

from snakemake.logging import logger

import cellconcepts
from cellconcepts.config import (
    ENRICHR_PREFIX,
    GO_BP_2023,
    check_config,
    dictionary_settings,
    enrichment_mode,
    enrichment_settings,
    enrichment_variants,
    input_source,
    resolve_shipped,
    training_settings,
    variants,
)
from cellconcepts.device import gpu_present
from cellconcepts.layout import ResultsLayout
from cellconcepts.report.figures import DATASET_FIGURES
from cellconcepts.report.tables import DATASET_TABLES
from cellconcepts.store import layout
from cellconcepts.store.layout import ImageFiles
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
DATASETS = config["datasets"]
ENV = "../../envs/cellconcepts.yaml"
TABLE_TEXT = (".csv", ".md", ".tex")
FIGURE = (".png", ".pdf")


wildcard_constraints:
    **Variant.wildcard_constraints(),
    dataset="|".join(DATASETS),


def dataset_section(wildcards, *keys):
    """A dataset's config value at ``keys`` (e.g. "microscopy", "layer")."""
    value = DATASETS[wildcards.dataset]
    for key in keys:
        value = value[key]
    return value


def datasets_where(predicate):
    """Regex matching the names of the datasets for which ``predicate`` holds."""
    names = [name for name in DATASETS if predicate(name)]
    return "|".join(names) if names else "(?!x)x"


def datasets_of_kind(kind):
    """Regex matching the names of the datasets of one kind (matches nothing if none)."""
    return datasets_where(lambda name: DATASETS[name]["kind"] == kind)


def has_ground_truth(dataset):
    return DATASETS[dataset]["kind"] == "synthetic"


def is_simulated_screen(dataset):
    ds = DATASETS[dataset]
    return ds["kind"] == "microscopy" and ds["microscopy"]["images"] == "simulate"


def task_named(dataset, name):
    return next(t for t in DATASETS[dataset]["tasks"] if t["name"] == name)


def label_columns(wildcards):
    """The obs columns of a dataset's tasks (what the token store must carry)."""
    return [task["column"] for task in DATASETS[wildcards.dataset]["tasks"]]


def variant_name(wildcards):
    return Variant.from_wildcards(wildcards).name


def variant_names(wildcards):
    return [v.name for v in variants(config, wildcards.dataset)]


def model_files(dataset, filename):
    """One per-model file over every variant of a dataset, in variant order."""
    return paths.models(filename, dataset, variants(config, dataset))


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


def pick(section, keys):
    """The keys of a config section that a rule uses (its params), so that editing any other
    key reruns nothing."""
    return {key: section[key] for key in keys}


def probe_settings():
    from cellconcepts.evaluate.probing import ProbeSettings

    return pick(config["evaluate"]["probe"], [f.name for f in fields(ProbeSettings)])


# --------------------------------------------------------------------------- microscopy


def imports_images(dataset):
    """A microscopy dataset whose images come in their microscope layout (rule
    import_images)."""
    ds = DATASETS[dataset]
    return ds["kind"] == "microscopy" and isinstance(ds["microscopy"]["images"], dict)


def image_dir(dataset):
    """Where a microscopy dataset's image store is: made by this workflow (simulated or
    imported) or given."""
    if is_simulated_screen(dataset) or imports_images(dataset):
        return paths.images(dataset=dataset)
    return DATASETS[dataset]["microscopy"]["images"]


def image_listing(wildcards):
    """The CSV that lists an imported screen's images (its edits rerun the import)."""
    from cellconcepts.store.image_sources import ImageSource

    images = dataset_section(wildcards, "microscopy", "images")
    return str(ImageSource.from_config(images).table)


def image_store_files(wildcards):
    files = ImageFiles.of(image_dir(wildcards.dataset))
    return {"images": str(files.images), "image_obs": str(files.obs)}


def image_encoder_files(wildcards):
    """The user's checkpoint, or the encoder of the MAE trained by the workflow."""
    user = DATASETS[wildcards.dataset]["microscopy"]["model"]["checkpoint"]
    if user:
        return {"encoder": user}
    dataset = wildcards.dataset
    return {
        "encoder": paths.encoder(layout.ENCODER_WEIGHTS, dataset),
        "encoder_config": paths.encoder(layout.ENCODER_CONFIG, dataset),
    }


def encoder_depth(dataset):
    """Blocks of the encoder: from a saved encoder's own config.json, else the config's
    architecture (which describes foreign weights)."""
    model = DATASETS[dataset]["microscopy"]["model"]
    saved = Path(model["checkpoint"] or "") / layout.ENCODER_CONFIG
    if model["checkpoint"] and saved.is_file():
        meta = json.loads(saved.read_text())
        if meta.get("model_type") == layout.ENCODER_MODEL_TYPE:
            return int(meta["depth"])
    return int(model["architecture"].get("depth", 12))


def probed_layers(wildcards):
    """The layers whose tokens are extracted: every block for 'best', else the chosen one."""
    layer = DATASETS[wildcards.dataset]["microscopy"]["layer"]
    if layer == "best":
        return list(range(1, encoder_depth(wildcards.dataset) + 1))
    return [int(layer)]


def first_icfl_pca(dataset):
    """The first ICFL + PCA variant of a dataset (else its first variant): the model the
    single-model figures show, as the paper's do."""
    names = [v.name for v in variants(config, dataset)]
    preferred = [n for n in names if n.startswith("icfl_pca_")]
    return (preferred or names)[0]


def heatmap_variant(dataset):
    """The model whose features the heatmaps show (default: the first ICFL + PCA variant)."""
    chosen = DATASETS[dataset]["microscopy"]["heatmaps"]["variant"]
    return chosen if chosen is not None else first_icfl_pca(dataset)


def feature_cosine_inputs(wildcards):
    """Rule feature_cosines: the token store, and the first ICFL + PCA model with its whitening
    and selectivity."""
    dataset, name = wildcards.dataset, first_icfl_pca(wildcards.dataset)
    return {
        "tokens": paths.tokens(dataset),
        "obs": paths.token_obs(dataset),
        "whitening": paths.whitening(dataset, Variant.parse(name).whitening),
        "model": paths.model("model.pt", dataset, name),
        "best_selectivity": paths.model("best_selectivity.csv", dataset, name),
    }


def heatmap_model(wildcards):
    dataset, name = wildcards.dataset, heatmap_variant(wildcards.dataset)
    return {
        "model": paths.model("model.pt", dataset, name),
        "codes": paths.model("codes.npz", dataset, name),
        "best_selectivity": paths.model("best_selectivity.csv", dataset, name),
        "whitening": paths.whitening(dataset, Variant.parse(name).whitening),
    }


def image_plate_column(wildcards):
    """The image obs column(s) naming the plate (microscopy.images.plate_column for an
    imported layout, else `plate`)."""
    if imports_images(wildcards.dataset):
        return dataset_section(wildcards, "microscopy", "images", "plate_column")
    return "plate"


def heatmap_groups(wildcards):
    """The planted groups (and the channel each change lives in) and the cell masks of a
    simulated screen."""
    if is_simulated_screen(wildcards.dataset):
        dataset = wildcards.dataset
        return {
            "groups": paths.images(layout.GROUPS, dataset),
            "masks": paths.images(layout.MASKS, dataset),
            "cells": paths.images(layout.CELLS, dataset),
        }
    return {}


# --------------------------------------------------------------------------- inputs


def expression_source_input(wildcards):
    """The user's .h5ad as a declared input (none for the data shipped inside scanpy)."""
    source = DATASETS[wildcards.dataset]["scrna"]["source"]
    return {} if source == "pbmc68k_reduced" else {"expression": source}


def expression_model_input(wildcards):
    inputs = expression_source_input(wildcards)
    if DATASETS[wildcards.dataset]["scrna"]["embedding"] == "autoencoder":
        inputs["model"] = paths.embedding("autoencoder.pt", wildcards.dataset)
    return inputs


def user_token_inputs(wildcards):
    tokens = DATASETS[wildcards.dataset]["tokens"]
    inputs = {"embeddings": tokens["path"]}
    if tokens.get("obs_path"):
        inputs["obs_table"] = tokens["obs_path"]
    return inputs


def report_inputs(wildcards):
    dataset = wildcards.dataset
    inputs = {
        "raw_probing": paths.raw("probing.csv", dataset),
        "metrics": model_files(dataset, "metrics.csv"),
        "dead": model_files(dataset, "dead_features.csv"),
        "cosine": model_files(dataset, "reconstruction_cosine.parquet"),
        "selectivity_counts": model_files(dataset, "selectivity_counts.csv"),
        "best_selectivity": model_files(dataset, "best_selectivity.csv"),
        "probing": model_files(dataset, "probing.csv"),
        "label_scores": model_files(dataset, "label_scores.csv"),
        "references": paths.raw("references.csv", dataset),
    }
    if has_ground_truth(dataset):
        inputs["atom_recovery"] = model_files(dataset, "atom_recovery.csv")
    return inputs


# --------------------------------------------------------------------------- CellProfiler


def cellprofiler_section(dataset):
    return DATASETS[dataset]["microscopy"]["cellprofiler"]


def has_heatmaps(dataset):
    ds = DATASETS[dataset]
    return ds["kind"] == "microscopy" and ds["microscopy"]["heatmaps"]["enabled"]


def has_single_cell_check(dataset):
    """The single-cell check needs the heatmaps and a simulated screen's cell masks."""
    return is_simulated_screen(dataset) and has_heatmaps(dataset)


def has_go_recovery(dataset):
    """GO-term recovery needs enrichment and a simulated screen's planted terms."""
    return is_simulated_screen(dataset) and has_enrichment(dataset)


def has_cellprofiler(dataset):
    ds = DATASETS[dataset]
    return ds["kind"] == "microscopy" and ds["microscopy"]["cellprofiler"]["enabled"]


def detectability_inputs(wildcards):
    """Rule group_detectability: the label scores of every model, the references, and the
    CellProfiler profiles where the dataset has them."""
    dataset = wildcards.dataset
    inputs = {
        "obs": paths.token_obs(dataset),
        "label_scores": model_files(dataset, "label_scores.csv"),
        "references": paths.raw("references.csv", dataset),
    }
    if has_cellprofiler(dataset):
        inputs["profiles"] = paths.cellprofiler("profiles.parquet", dataset)
    return inputs


def cellprofiler_settings(wildcards):
    """What segmentation and measurement depend on. No path: the pipeline is an input of the
    jobs that may run the real CellProfiler (cellprofiler_pipeline), so that a moved run
    reruns nothing and an edited pipeline reruns them."""
    section = cellprofiler_section(wildcards.dataset)
    return pick(
        section, ["backend", "channels", "nucleus_channel", "cytoplasm_channel"]
    )


def cellprofiler_pipeline(wildcards):
    """The `.cppipe` as an input where the real CellProfiler may read it (backend
    `cellprofiler`, or `auto`, which picks it at run time where it is installed); none for
    `cp_measure`. The config's path where it exists in the working directory, else the copy this
    repository ships, relative to the working directory: no absolute path in the job's record.
    """
    section = cellprofiler_section(wildcards.dataset)
    if section["backend"] == "cp_measure":
        return {}
    configured = section["pipeline"]
    if (Path.cwd() / configured).is_file():
        return {"pipeline": configured}
    shipped = resolve_shipped(configured, Path.cwd())
    return {"pipeline": os.path.relpath(shipped) if shipped else configured}


def cellprofiler_chunks(wildcards, kind, suffix):
    """One file of every chunk's measurements (``kind``: cells, masks or timing)."""
    n = cellprofiler_section(wildcards.dataset)["chunks"]
    return [
        paths.cellprofiler_chunk(kind, suffix, wildcards.dataset, i) for i in range(n)
    ]


# --------------------------------------------------------------------------- GO enrichment


def has_enrichment(dataset):
    """GO enrichment runs for scRNA and microscopy datasets unless switched off."""
    ds = DATASETS[dataset]
    enabled = enrichment_settings(config, dataset)["enabled"]
    return enabled and enrichment_mode(ds["kind"]) is not None


def enrichment_datasets():
    names = [name for name in DATASETS if has_enrichment(name)]
    return "|".join(names) if names else "(?!x)x"


def enrichment_inputs(wildcards):
    """Declared inputs: the user's expression .h5ad and the gene sets (a GMT file, or the
    Enrichr library downloaded once; the offline default ships inside pyenrichr)."""
    inputs = {}
    if DATASETS[wildcards.dataset]["kind"] == "scrna":
        inputs.update(expression_source_input(wildcards))
    spec = enrichment_settings(config, wildcards.dataset)["gene_sets"]
    if spec.startswith(ENRICHR_PREFIX):
        inputs["gene_sets"] = paths.gene_sets(spec.removeprefix(ENRICHR_PREFIX))
    elif spec != GO_BP_2023:
        inputs["gene_sets"] = spec
    return inputs


def enrichment_model_settings(wildcards):
    """What one model's enrichment depends on: term sizes, FDR, labels, the check and the
    dot plot, and the gene-list settings of the dataset's kind."""
    settings = enrichment_settings(config, wildcards.dataset)
    keys = [
        "min_term_size",
        "max_term_size",
        "fdr",
        "label_min_selectivity",
        "check_lists",
    ]
    picked = pick(settings, keys)
    picked["figures"] = pick(settings["figures"], ["dotplot_features", "dotplot_terms"])
    mode = enrichment_mode(DATASETS[wildcards.dataset]["kind"])
    picked[mode] = settings[mode]
    return picked


def validation_enrichment(wildcards):
    """What validate_dataset checks of a dataset's GO enrichment (None without enrichment)."""
    if not has_enrichment(wildcards.dataset):
        return None
    settings = enrichment_settings(config, wildcards.dataset)
    ds = DATASETS[wildcards.dataset]
    return {
        "mode": enrichment_mode(ds["kind"]),
        "gene_column": settings["screen"]["gene_column"],
        "matrix": settings["expression"]["matrix"],
        "source": ds.get("scrna", {}).get("source"),
        "control": ds.get("control"),
        "min_term_size": settings["min_term_size"],
        "max_term_size": settings["max_term_size"],
        "label_task": task_named(
            wildcards.dataset, enrichment_label_task(wildcards.dataset)
        ),
        "labels": settings["labels"],
    }


def validation_warnings():
    """The warnings of every dataset's validate_dataset job, for the main log."""
    for dataset in DATASETS:
        path = Path(paths.validation(dataset))
        if path.is_file():
            for warning in json.loads(path.read_text()).get("warnings", []):
                logger.warning(f"validate_dataset ({dataset}): {warning}")


def enrichment_table_inputs(wildcards):
    dataset, names = wildcards.dataset, enrichment_variants(config, wildcards.dataset)
    return {
        "best_selectivity": paths.models("best_selectivity.csv", dataset, names),
        "enrichment": [paths.enrich("enrichment.parquet", dataset, n) for n in names],
    }


def enrichment_label_task(dataset):
    """The task whose labels the enrichment tables are organised by (default: the first)."""
    return (
        enrichment_settings(config, dataset)["label_task"]
        or DATASETS[dataset]["tasks"][0]["name"]
    )


def simulated_group_task(dataset):
    """The task over the simulator's planted gene groups (column gene_group)."""
    for task in DATASETS[dataset]["tasks"]:
        if task["column"] == "gene_group":
            return task["name"]
    raise ValueError(
        f"datasets.{dataset}.tasks: GO recovery needs a task on column 'gene_group'"
    )


# --------------------------------------------------------------------------- targets


def browser_inputs(wildcards):
    """Every model's codes, weights and dead flags; the enrichment tables of the annotated
    models; the images (microscopy) or the UMAP and expression (scRNA) the examples show.
    """
    dataset = wildcards.dataset
    kind = DATASETS[dataset]["kind"]
    inputs = {
        "obs": paths.token_obs(dataset),
        "codes": model_files(dataset, "codes.npz"),
        "models": model_files(dataset, "model.pt"),
        "dead": model_files(dataset, "dead_features.csv"),
    }
    if has_enrichment(dataset):
        names = enrichment_variants(config, dataset)
        for key, name in (
            ("annotation", "feature_annotation.csv"),
            ("genes", "feature_genes.parquet"),
            ("terms", "enrichment.parquet"),
        ):
            inputs[key] = [paths.enrich(name, dataset, n) for n in names]
    if kind == "microscopy":
        inputs.update(image_store_files(wildcards))
        if is_simulated_screen(dataset):
            inputs["masks"] = paths.images(layout.MASKS, dataset)
    if kind == "scrna":
        inputs["umap"] = paths.embedding("umap.parquet", dataset)
        if has_enrichment(dataset):
            inputs.update(expression_source_input(wildcards))
    return inputs


def browser_expression(wildcards):
    """scRNA with enrichment: the expression source and matrix the examples' genes come from."""
    dataset = wildcards.dataset
    if DATASETS[dataset]["kind"] != "scrna" or not has_enrichment(dataset):
        return {"expression_source": None, "expression_matrix": "X"}
    return {
        "expression_source": DATASETS[dataset]["scrna"]["source"],
        "expression_matrix": enrichment_settings(config, dataset)["expression"][
            "matrix"
        ],
    }


def all_targets():
    targets = [paths.paper_map(".md")]
    for dataset in DATASETS:
        targets.append(paths.headline(dataset) + ".csv")
        targets.append(paths.table("selectivity_verdicts.csv", dataset))
        targets += [paths.figure(f"{name}.png", dataset) for name in DATASET_FIGURES]
        targets.append(paths.figure("feature_cosines.png", dataset))
        if config["browser"]["enabled"]:
            targets.append(paths.browser(dataset))
        if has_ground_truth(dataset):
            targets.append(paths.table("atom_recovery.csv", dataset))
        if DATASETS[dataset]["kind"] == "microscopy":
            targets += [
                paths.table("layer_probe.csv", dataset),
                paths.table("label_selectivity.csv", dataset),
                paths.table("group_detectability.csv", dataset),
            ]
            if has_heatmaps(dataset):
                targets.append(paths.table("heatmap_channels.csv", dataset))
        if has_single_cell_check(dataset):
            targets.append(paths.table("single_cell_summary.csv", dataset))
        if has_cellprofiler(dataset):
            targets += [
                paths.table("cp_correlation.csv", dataset),
                paths.table("cellprofiler_profiles.csv", dataset),
            ]
            if is_simulated_screen(dataset):
                targets.append(paths.table("cp_segmentation.csv", dataset))
        if has_enrichment(dataset):
            targets.append(paths.table("enrichment_labels.csv", dataset))
            for name in enrichment_variants(config, dataset):
                targets += [
                    paths.enrich("feature_annotation.csv", dataset, name),
                    paths.enrich("dotplot.png", dataset, name),
                ]
                if DATASETS[dataset]["kind"] == "scrna":
                    targets.append(paths.enrich("umap.png", dataset, name))
            if has_go_recovery(dataset):
                targets.append(paths.table("go_recovery.csv", dataset))
    return targets
