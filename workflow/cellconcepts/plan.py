"""What the workflow does for a config: which stages each dataset runs, and each rule's inputs,
params and targets as functions of the config and the job's wildcards.

The rules' input functions and params (workflow/rules/*.smk) call a `WorkflowPlan` made once by
workflow/rules/common.smk; here they are plain Python, testable without Snakemake. Every path
comes from the results layout (`cellconcepts.layout`).
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from cellconcepts.config import (
    ENRICHR_PREFIX,
    GO_BP_2023,
    enrichment_mode,
    enrichment_settings,
    enrichment_variants,
    resolve_shipped,
    variants,
)
from cellconcepts.defaults import schema_default
from cellconcepts.layout import ResultsLayout
from cellconcepts.report.figures import DATASET_FIGURES
from cellconcepts.store import layout
from cellconcepts.store.layout import ImageFiles
from cellconcepts.variant import Variant


class WorkflowPlan:
    """The validated config's datasets, stages, inputs and targets (``config``: the workflow's
    config after the schema and `check_config`)."""

    def __init__(self, config: dict[str, Any], paths: ResultsLayout) -> None:
        self.config = config
        self.datasets = config["datasets"]
        self.paths = paths

    def dataset_section(self, wildcards, *keys):
        """A dataset's config value at ``keys`` (e.g. "microscopy", "layer")."""
        value = self.datasets[wildcards.dataset]
        for key in keys:
            value = value[key]
        return value

    def datasets_where(self, predicate):
        """Regex matching the names of the datasets for which ``predicate`` holds."""
        names = [name for name in self.datasets if predicate(name)]
        return "|".join(names) if names else "(?!x)x"

    def datasets_of_kind(self, kind):
        """Regex matching the names of the datasets of one kind (matches nothing if none)."""
        return self.datasets_where(lambda name: self.datasets[name]["kind"] == kind)

    def has_ground_truth(self, dataset):
        return self.datasets[dataset]["kind"] == "synthetic"

    def is_simulated_screen(self, dataset):
        ds = self.datasets[dataset]
        return ds["kind"] == "microscopy" and ds["microscopy"]["images"] == "simulate"

    def task_named(self, dataset, name):
        return next(t for t in self.datasets[dataset]["tasks"] if t["name"] == name)

    def label_columns(self, wildcards):
        """The obs columns of a dataset's tasks (what the token store must carry)."""
        return [task["column"] for task in self.datasets[wildcards.dataset]["tasks"]]

    def variant_name(self, wildcards):
        return Variant.from_wildcards(wildcards).name

    def variant_names(self, wildcards):
        return [v.name for v in variants(self.config, wildcards.dataset)]

    def model_files(self, dataset, filename):
        """One per-model file over every variant of a dataset, in variant order."""
        return self.paths.models(filename, dataset, variants(self.config, dataset))

    def pick(self, section, keys):
        """The keys of a config section that a rule uses (its params), so that editing any other
        key reruns nothing."""
        return {key: section[key] for key in keys}

    def probe_settings(self):
        from cellconcepts.evaluate.probing import ProbeSettings

        return self.pick(self.config["evaluate"]["probe"], [f.name for f in fields(ProbeSettings)])

    # --------------------------------------------------------------------------- microscopy

    def imports_images(self, dataset):
        """A microscopy dataset whose images come in their microscope layout (rule
        import_images)."""
        ds = self.datasets[dataset]
        return ds["kind"] == "microscopy" and isinstance(ds["microscopy"]["images"], dict)

    def image_dir(self, dataset):
        """Where a microscopy dataset's image store is: made by this workflow (simulated or
        imported) or given."""
        if self.is_simulated_screen(dataset) or self.imports_images(dataset):
            return self.paths.images(dataset=dataset)
        return self.datasets[dataset]["microscopy"]["images"]

    def image_listing(self, wildcards):
        """The CSV that lists an imported screen's images (its edits rerun the import)."""
        from cellconcepts.store.image_sources import ImageSource

        images = self.dataset_section(wildcards, "microscopy", "images")
        return str(ImageSource.from_config(images).table)

    def image_store_files(self, wildcards):
        files = ImageFiles.of(self.image_dir(wildcards.dataset))
        return {"images": str(files.images), "image_obs": str(files.obs)}

    def image_encoder_files(self, wildcards):
        """The user's checkpoint, or the encoder of the MAE trained by the workflow."""
        user = self.datasets[wildcards.dataset]["microscopy"]["model"]["checkpoint"]
        if user:
            return {"encoder": user}
        dataset = wildcards.dataset
        return {
            "encoder": self.paths.encoder(layout.ENCODER_WEIGHTS, dataset),
            "encoder_config": self.paths.encoder(layout.ENCODER_CONFIG, dataset),
        }

    def encoder_depth(self, dataset):
        """Blocks of the encoder: from a saved encoder's own config.json, else the config's
        architecture (which describes foreign weights)."""
        model = self.datasets[dataset]["microscopy"]["model"]
        saved = Path(model["checkpoint"] or "") / layout.ENCODER_CONFIG
        if model["checkpoint"] and saved.is_file():
            meta = json.loads(saved.read_text())
            if meta.get("model_type") == layout.ENCODER_MODEL_TYPE:
                return int(meta["depth"])
        depth = schema_default("datasets.*.microscopy.model.architecture.depth")
        return int(model["architecture"].get("depth", depth))

    def probed_layers(self, wildcards):
        """The layers whose tokens are extracted: every block for 'best', else the chosen one."""
        layer = self.datasets[wildcards.dataset]["microscopy"]["layer"]
        if layer == "best":
            return list(range(1, self.encoder_depth(wildcards.dataset) + 1))
        return [int(layer)]

    def first_icfl_pca(self, dataset):
        """The first ICFL + PCA variant of a dataset (else its first variant): the model the
        single-model figures show, as the paper's do."""
        every = variants(self.config, dataset)
        names = [v.name for v in every]
        preferred = [v.name for v in every if (v.method, v.whitening) == ("icfl", "pca")]
        return (preferred or names)[0]

    def heatmap_variant(self, dataset):
        """The model whose features the heatmaps show (default: the first ICFL + PCA variant)."""
        chosen = self.datasets[dataset]["microscopy"]["heatmaps"]["variant"]
        return chosen if chosen is not None else self.first_icfl_pca(dataset)

    def feature_cosine_inputs(self, wildcards):
        """Rule feature_cosines: the token store, and the first ICFL + PCA model with its whitening
        and selectivity."""
        dataset, name = wildcards.dataset, self.first_icfl_pca(wildcards.dataset)
        return {
            "tokens": self.paths.tokens(dataset),
            "obs": self.paths.token_obs(dataset),
            "whitening": self.paths.whitening(dataset, Variant.parse(name).whitening),
            "model": self.paths.model("model.pt", dataset, name),
            "best_selectivity": self.paths.model("best_selectivity.csv", dataset, name),
        }

    def heatmap_model(self, wildcards):
        dataset, name = wildcards.dataset, self.heatmap_variant(wildcards.dataset)
        return {
            "model": self.paths.model("model.pt", dataset, name),
            "codes": self.paths.model("codes.npz", dataset, name),
            "best_selectivity": self.paths.model("best_selectivity.csv", dataset, name),
            "whitening": self.paths.whitening(dataset, Variant.parse(name).whitening),
        }

    def image_plate_column(self, wildcards):
        """The image obs column(s) naming the plate (microscopy.images.plate_column for an
        imported layout, else `plate`)."""
        if self.imports_images(wildcards.dataset):
            return self.dataset_section(wildcards, "microscopy", "images", "plate_column")
        return "plate"

    def heatmap_groups(self, wildcards):
        """The planted groups (and the channel each change lives in) and the cell masks of a
        simulated screen."""
        if self.is_simulated_screen(wildcards.dataset):
            dataset = wildcards.dataset
            return {
                "groups": self.paths.images(layout.GROUPS, dataset),
                "masks": self.paths.images(layout.MASKS, dataset),
                "cells": self.paths.images(layout.CELLS, dataset),
            }
        return {}

    # --------------------------------------------------------------------------- inputs

    def expression_source_input(self, wildcards):
        """The user's .h5ad as a declared input (none for the data shipped inside scanpy)."""
        source = self.datasets[wildcards.dataset]["scrna"]["source"]
        return {} if source == "pbmc68k_reduced" else {"expression": source}

    def expression_model_input(self, wildcards):
        inputs = self.expression_source_input(wildcards)
        if self.datasets[wildcards.dataset]["scrna"]["embedding"] == "autoencoder":
            inputs["model"] = self.paths.embedding("autoencoder.pt", wildcards.dataset)
        return inputs

    def user_token_inputs(self, wildcards):
        tokens = self.datasets[wildcards.dataset]["tokens"]
        inputs = {"embeddings": tokens["path"]}
        if tokens.get("obs_path"):
            inputs["obs_table"] = tokens["obs_path"]
        return inputs

    def report_inputs(self, wildcards):
        dataset = wildcards.dataset
        inputs = {
            "raw_probing": self.paths.raw("probing.csv", dataset),
            "metrics": self.model_files(dataset, "metrics.csv"),
            "dead": self.model_files(dataset, "dead_features.csv"),
            "cosine": self.model_files(dataset, "reconstruction_cosine.parquet"),
            "selectivity_counts": self.model_files(dataset, "selectivity_counts.csv"),
            "best_selectivity": self.model_files(dataset, "best_selectivity.csv"),
            "probing": self.model_files(dataset, "probing.csv"),
            "label_scores": self.model_files(dataset, "label_scores.csv"),
            "references": self.paths.raw("references.csv", dataset),
        }
        if self.has_ground_truth(dataset):
            inputs["atom_recovery"] = self.model_files(dataset, "atom_recovery.csv")
        return inputs

    # --------------------------------------------------------------------------- CellProfiler

    def cellprofiler_section(self, dataset):
        return self.datasets[dataset]["microscopy"]["cellprofiler"]

    def has_heatmaps(self, dataset):
        ds = self.datasets[dataset]
        return ds["kind"] == "microscopy" and ds["microscopy"]["heatmaps"]["enabled"]

    def has_single_cell_check(self, dataset):
        """The single-cell check needs the heatmaps and a simulated screen's cell masks."""
        return self.is_simulated_screen(dataset) and self.has_heatmaps(dataset)

    def has_go_recovery(self, dataset):
        """GO-term recovery needs enrichment and a simulated screen's planted terms."""
        return self.is_simulated_screen(dataset) and self.has_enrichment(dataset)

    def has_cellprofiler(self, dataset):
        ds = self.datasets[dataset]
        return ds["kind"] == "microscopy" and ds["microscopy"]["cellprofiler"]["enabled"]

    def detectability_inputs(self, wildcards):
        """Rule group_detectability: the label scores of every model, the references, and the
        CellProfiler profiles where the dataset has them."""
        dataset = wildcards.dataset
        inputs = {
            "obs": self.paths.token_obs(dataset),
            "label_scores": self.model_files(dataset, "label_scores.csv"),
            "references": self.paths.raw("references.csv", dataset),
        }
        if self.has_cellprofiler(dataset):
            inputs["profiles"] = self.paths.cellprofiler("profiles.parquet", dataset)
        return inputs

    def cellprofiler_settings(self, wildcards):
        """What segmentation and measurement depend on. No path: the pipeline is an input of the
        jobs that may run the real CellProfiler (self.cellprofiler_pipeline), so that a moved run
        reruns nothing and an edited pipeline reruns them."""
        section = self.cellprofiler_section(wildcards.dataset)
        return self.pick(section, ["backend", "channels", "nucleus_channel", "cytoplasm_channel"])

    def cellprofiler_pipeline(self, wildcards):
        """The `.cppipe` as an input where the real CellProfiler may read it (backend
        `cellprofiler`, or `auto`, which picks it at run time where it is installed); none for
        `cp_measure`. The config's path where it exists in the working directory, else the copy this
        repository ships, relative to the working directory: no absolute path in the job's record.
        """
        section = self.cellprofiler_section(wildcards.dataset)
        if section["backend"] == "cp_measure":
            return {}
        configured = section["pipeline"]
        if (Path.cwd() / configured).is_file():
            return {"pipeline": configured}
        shipped = resolve_shipped(configured, Path.cwd())
        return {"pipeline": os.path.relpath(shipped) if shipped else configured}

    def cellprofiler_chunks(self, wildcards, kind, suffix):
        """One file of every chunk's measurements (``kind``: cells, masks or timing)."""
        n = self.cellprofiler_section(wildcards.dataset)["chunks"]
        return [self.paths.cellprofiler_chunk(kind, suffix, wildcards.dataset, i) for i in range(n)]

    # --------------------------------------------------------------------------- GO enrichment

    def has_enrichment(self, dataset):
        """GO enrichment runs for scRNA and microscopy datasets unless switched off."""
        ds = self.datasets[dataset]
        enabled = enrichment_settings(self.config, dataset)["enabled"]
        return enabled and enrichment_mode(ds["kind"]) is not None

    def enrichment_datasets(self):
        names = [name for name in self.datasets if self.has_enrichment(name)]
        return "|".join(names) if names else "(?!x)x"

    def enrichment_inputs(self, wildcards):
        """Declared inputs: the user's expression .h5ad and the gene sets (a GMT file, or the
        Enrichr library downloaded once; the offline default ships inside pyenrichr)."""
        inputs = {}
        if self.datasets[wildcards.dataset]["kind"] == "scrna":
            inputs.update(self.expression_source_input(wildcards))
        spec = enrichment_settings(self.config, wildcards.dataset)["gene_sets"]
        if spec.startswith(ENRICHR_PREFIX):
            inputs["gene_sets"] = self.paths.gene_sets(spec.removeprefix(ENRICHR_PREFIX))
        elif spec != GO_BP_2023:
            inputs["gene_sets"] = spec
        return inputs

    def enrichment_model_settings(self, wildcards):
        """What one model's enrichment depends on: term sizes, FDR, labels, the check and the
        dot plot, and the gene-list settings of the dataset's kind."""
        settings = enrichment_settings(self.config, wildcards.dataset)
        keys = [
            "min_term_size",
            "max_term_size",
            "fdr",
            "label_min_selectivity",
            "check_lists",
        ]
        picked = self.pick(settings, keys)
        picked["figures"] = self.pick(settings["figures"], ["dotplot_features", "dotplot_terms"])
        mode = enrichment_mode(self.datasets[wildcards.dataset]["kind"])
        picked[mode] = settings[mode]
        return picked

    def validation_enrichment(self, wildcards):
        """What validate_dataset checks of a dataset's GO enrichment (None without enrichment)."""
        if not self.has_enrichment(wildcards.dataset):
            return None
        settings = enrichment_settings(self.config, wildcards.dataset)
        ds = self.datasets[wildcards.dataset]
        return {
            "mode": enrichment_mode(ds["kind"]),
            "gene_column": settings["screen"]["gene_column"],
            "matrix": settings["expression"]["matrix"],
            "source": ds.get("scrna", {}).get("source"),
            "control": ds.get("control"),
            "min_term_size": settings["min_term_size"],
            "max_term_size": settings["max_term_size"],
            "label_task": self.task_named(
                wildcards.dataset, self.enrichment_label_task(wildcards.dataset)
            ),
            "labels": settings["labels"],
        }

    def enrichment_table_inputs(self, wildcards):
        dataset, names = wildcards.dataset, enrichment_variants(self.config, wildcards.dataset)
        return {
            "best_selectivity": self.paths.models("best_selectivity.csv", dataset, names),
            "enrichment": [self.paths.enrich("enrichment.parquet", dataset, n) for n in names],
        }

    def enrichment_label_task(self, dataset):
        """The task whose labels the enrichment tables are organised by (default: the first)."""
        return (
            enrichment_settings(self.config, dataset)["label_task"]
            or self.datasets[dataset]["tasks"][0]["name"]
        )

    def simulated_group_task(self, dataset):
        """The task over the simulator's planted gene groups (column gene_group)."""
        for task in self.datasets[dataset]["tasks"]:
            if task["column"] == "gene_group":
                return task["name"]
        raise ValueError(
            f"datasets.{dataset}.tasks: GO recovery needs a task on column 'gene_group'"
        )

    # --------------------------------------------------------------------------- targets

    def browser_inputs(self, wildcards):
        """Every model's codes, weights and dead flags; the enrichment tables of the annotated
        models; the images (microscopy) or the UMAP and expression (scRNA) the examples show.
        """
        dataset = wildcards.dataset
        kind = self.datasets[dataset]["kind"]
        inputs = {
            "obs": self.paths.token_obs(dataset),
            "codes": self.model_files(dataset, "codes.npz"),
            "models": self.model_files(dataset, "model.pt"),
            "dead": self.model_files(dataset, "dead_features.csv"),
        }
        if self.has_enrichment(dataset):
            names = enrichment_variants(self.config, dataset)
            for key, name in (
                ("annotation", "feature_annotation.csv"),
                ("genes", "feature_genes.parquet"),
                ("terms", "enrichment.parquet"),
            ):
                inputs[key] = [self.paths.enrich(name, dataset, n) for n in names]
        if kind == "microscopy":
            inputs.update(self.image_store_files(wildcards))
            if self.is_simulated_screen(dataset):
                inputs["masks"] = self.paths.images(layout.MASKS, dataset)
        if kind == "scrna":
            inputs["umap"] = self.paths.embedding("umap.parquet", dataset)
            if self.has_enrichment(dataset):
                inputs.update(self.expression_source_input(wildcards))
        return inputs

    def browser_expression(self, wildcards):
        """scRNA with enrichment: the expression source and matrix the examples' genes come from."""
        dataset = wildcards.dataset
        if self.datasets[dataset]["kind"] != "scrna" or not self.has_enrichment(dataset):
            return {"expression_source": None, "expression_matrix": "X"}
        return {
            "expression_source": self.datasets[dataset]["scrna"]["source"],
            "expression_matrix": enrichment_settings(self.config, dataset)["expression"]["matrix"],
        }

    def all_targets(self):
        targets = [self.paths.paper_map(".md")]
        for dataset in self.datasets:
            targets.append(self.paths.headline(dataset) + ".csv")
            targets.append(self.paths.table("selectivity_verdicts.csv", dataset))
            targets += [self.paths.figure(f"{name}.png", dataset) for name in DATASET_FIGURES]
            targets.append(self.paths.figure("feature_cosines.png", dataset))
            if self.config["browser"]["enabled"]:
                targets.append(self.paths.browser(dataset))
            if self.has_ground_truth(dataset):
                targets.append(self.paths.table("atom_recovery.csv", dataset))
            if self.datasets[dataset]["kind"] == "microscopy":
                targets += [
                    self.paths.table("layer_probe.csv", dataset),
                    self.paths.table("label_selectivity.csv", dataset),
                    self.paths.table("group_detectability.csv", dataset),
                ]
                if self.has_heatmaps(dataset):
                    targets.append(self.paths.table("heatmap_channels.csv", dataset))
            if self.has_single_cell_check(dataset):
                targets.append(self.paths.table("single_cell_summary.csv", dataset))
            if self.has_cellprofiler(dataset):
                targets += [
                    self.paths.table("cp_correlation.csv", dataset),
                    self.paths.table("cellprofiler_profiles.csv", dataset),
                ]
                if self.is_simulated_screen(dataset):
                    targets.append(self.paths.table("cp_segmentation.csv", dataset))
            if self.has_enrichment(dataset):
                targets.append(self.paths.table("enrichment_labels.csv", dataset))
                for name in enrichment_variants(self.config, dataset):
                    targets += [
                        self.paths.enrich("feature_annotation.csv", dataset, name),
                        self.paths.enrich("dotplot.png", dataset, name),
                    ]
                    if self.datasets[dataset]["kind"] == "scrna":
                        targets.append(self.paths.enrich("umap.png", dataset, name))
                if self.has_go_recovery(dataset):
                    targets.append(self.paths.table("go_recovery.csv", dataset))
        return targets
