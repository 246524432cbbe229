"""Shared paths and input functions; config checks that need more than the schema."""

import sys
from pathlib import Path

# The Snakefile uses the package of this checkout (rule scripts do the same, see
# workflow/scripts/_package_path.py).
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from cellconcepts.settings import (
    Variant,
    check_config,
    dictionary_settings,
    ENRICHR_PREFIX,
    GO_BP_2023,
    enrichment_mode,
    enrichment_settings,
    resolve_shipped,
    variants,
)  # noqa: E402

# Input paths in the config are relative to the working directory, as Snakemake resolves them.
check_config(
    config,
    Path.cwd(),
    Path(workflow.basedir) / "workflow/schemas/config.schema.yaml",
)

R = config["results"]
DATASETS = config["datasets"]
ENV = "../../envs/cellconcepts.yaml"

STORE = f"{R}/{{dataset}}/tokens"
MODEL = f"{R}/{{dataset}}/models/{{method}}_{{whitening}}_k{{sparsity}}_seed{{seed}}"
LOGS = f"{R}/{{dataset}}/logs"
BENCH = f"{R}/{{dataset}}/benchmarks"
VARIANT = "{method}_{whitening}_k{sparsity}_seed{seed}"


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="icfl|topk",
    whitening="pca|none",
    sparsity=r"\d+",
    seed=r"\d+",


def datasets_of_kind(kind):
    """Regex matching the names of the datasets of one kind (matches nothing if none)."""
    names = [name for name, ds in DATASETS.items() if ds["kind"] == kind]
    return "|".join(names) if names else "(?!x)x"


def has_ground_truth(dataset):
    return DATASETS[dataset]["kind"] == "synthetic"


def is_simulated_screen(dataset):
    ds = DATASETS[dataset]
    return ds["kind"] == "microscopy" and ds["microscopy"]["images"] == "simulate"


def image_dir(dataset):
    images = DATASETS[dataset]["microscopy"]["images"]
    return f"{R}/{dataset}/images" if images == "simulate" else images


def image_store_files(wildcards):
    folder = image_dir(wildcards.dataset)
    return {"images": f"{folder}/images.npy", "image_obs": f"{folder}/obs.parquet"}


def image_encoder(wildcards):
    """The user's checkpoint, or the MAE trained by the workflow."""
    user_weights = DATASETS[wildcards.dataset]["microscopy"]["model"]["checkpoint"]
    return user_weights or f"{R}/{wildcards.dataset}/embedding/encoder"


def heatmap_variant(dataset):
    """The model whose features the heatmaps show (default: the first ICFL + PCA variant)."""
    chosen = DATASETS[dataset]["microscopy"]["heatmaps"]["variant"]
    names = [v.name for v in variants(config, dataset)]
    if chosen is not None:
        return chosen
    preferred = [n for n in names if n.startswith("icfl_pca_")]
    return (preferred or names)[0]


def heatmap_task(wildcards):
    name = DATASETS[wildcards.dataset]["microscopy"]["heatmaps"]["task"]
    return next(t for t in DATASETS[wildcards.dataset]["tasks"] if t["name"] == name)


def heatmap_model(wildcards):
    name = heatmap_variant(wildcards.dataset)
    model = f"{R}/{wildcards.dataset}/models/{name}"
    whitening = Variant.parse(name).whitening
    return {
        "model": f"{model}/model.pt",
        "codes": f"{model}/codes.npz",
        "best_selectivity": f"{model}/best_selectivity.csv",
        "whitening": f"{R}/{wildcards.dataset}/whitening/{whitening}.npz",
    }


def token_store(wildcards):
    return {
        "tokens": f"{R}/{wildcards.dataset}/tokens/tokens.npy",
        "obs": f"{R}/{wildcards.dataset}/tokens/obs.parquet",
    }


def variant_name(wildcards):
    return VARIANT.format(**wildcards)


def model_files(dataset, filename):
    """{variant: path} of one per-model file over every variant of a dataset."""
    return {
        v.name: f"{R}/{dataset}/models/{v.name}/{filename}"
        for v in variants(config, dataset)
    }


REPORT_FIGURES = ["training_curves", "best_selectivity", "probing_bta", "sparsity"]
REPORT_TABLES = [
    "dead_features",
    "selectivity_counts",
    "best_selectivity",
    "probing",
    "reconstruction",
]


def all_targets():
    targets = []
    for dataset in DATASETS:
        targets.append(f"{R}/{dataset}/headline.csv")
        targets += [f"{R}/{dataset}/figures/{name}.png" for name in REPORT_FIGURES]
        if has_ground_truth(dataset):
            targets.append(f"{R}/{dataset}/tables/atom_recovery.csv")
        if DATASETS[dataset]["kind"] == "microscopy":
            targets += [
                f"{R}/{dataset}/tables/layer_probe.csv",
                f"{R}/{dataset}/tables/label_selectivity.csv",
                f"{R}/{dataset}/tables/heatmap_channels.csv",
            ]
        if is_simulated_screen(dataset):
            targets.append(f"{R}/{dataset}/tables/single_cell_summary.csv")
        if has_cellprofiler(dataset):
            targets += [
                f"{R}/{dataset}/tables/cp_correlation.csv",
                f"{R}/{dataset}/tables/cellprofiler_profiles.csv",
            ]
            if is_simulated_screen(dataset):
                targets.append(f"{R}/{dataset}/tables/cp_segmentation.csv")
        if has_enrichment(dataset):
            targets.append(f"{R}/{dataset}/tables/enrichment_labels.csv")
            for name in enrichment_variants(dataset):
                folder = f"{R}/{dataset}/enrich/{name}"
                targets += [f"{folder}/feature_annotation.csv", f"{folder}/dotplot.png"]
                if DATASETS[dataset]["kind"] == "scrna":
                    targets.append(f"{folder}/umap.png")
            if is_simulated_screen(dataset):
                targets.append(f"{R}/{dataset}/tables/go_recovery.csv")
    return targets


def expression_source_input(wildcards):
    """The user's .h5ad as a declared input (none for the data shipped inside scanpy)."""
    source = DATASETS[wildcards.dataset]["scrna"]["source"]
    return {} if source == "pbmc68k_reduced" else {"expression": source}


def expression_model_input(wildcards):
    inputs = expression_source_input(wildcards)
    if DATASETS[wildcards.dataset]["scrna"]["embedding"] == "autoencoder":
        inputs["model"] = f"{R}/{wildcards.dataset}/embedding/autoencoder.pt"
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
        "raw_probing": f"{R}/{dataset}/raw/probing.csv",
        "metrics": list(model_files(dataset, "metrics.csv").values()),
        "dead": list(model_files(dataset, "dead_features.csv").values()),
        "cosine": list(model_files(dataset, "reconstruction_cosine.parquet").values()),
        "selectivity_counts": list(
            model_files(dataset, "selectivity_counts.csv").values()
        ),
        "best_selectivity": list(model_files(dataset, "best_selectivity.csv").values()),
        "probing": list(model_files(dataset, "probing.csv").values()),
    }
    if has_ground_truth(dataset):
        inputs["atom_recovery"] = list(
            model_files(dataset, "atom_recovery.csv").values()
        )
    return inputs


def cellprofiler_section(dataset):
    return DATASETS[dataset]["microscopy"]["cellprofiler"]


def has_cellprofiler(dataset):
    ds = DATASETS[dataset]
    return ds["kind"] == "microscopy" and ds["microscopy"]["cellprofiler"]["enabled"]


def cellprofiler_settings(wildcards):
    """The baseline's settings with the shipped pipeline's path resolved."""
    section = dict(cellprofiler_section(wildcards.dataset))
    section["pipeline"] = str(resolve_shipped(section["pipeline"], Path.cwd()))
    return section


def cellprofiler_task(wildcards):
    name = cellprofiler_section(wildcards.dataset)["task"]
    return next(t for t in DATASETS[wildcards.dataset]["tasks"] if t["name"] == name)


def cellprofiler_chunks(wildcards, filename):
    n = cellprofiler_section(wildcards.dataset)["chunks"]
    return [
        f"{R}/{wildcards.dataset}/cellprofiler/chunks/{filename.format(chunk=i)}"
        for i in range(n)
    ]


def has_enrichment(dataset):
    """GO enrichment runs for scRNA and microscopy datasets unless switched off."""
    ds = DATASETS[dataset]
    enabled = enrichment_settings(config, dataset)["enabled"]
    return enabled and enrichment_mode(ds["kind"]) is not None


def enrichment_datasets():
    names = [name for name in DATASETS if has_enrichment(name)]
    return "|".join(names) if names else "(?!x)x"


def enrichment_variants(dataset):
    """The models whose features are annotated (enrich.variants, default every model)."""
    chosen = enrichment_settings(config, dataset)["variants"]
    names = [v.name for v in variants(config, dataset)]
    return names if chosen is None else [n for n in names if n in chosen]


def enrichment_inputs(wildcards):
    """Declared inputs: the user's expression .h5ad and the gene sets (a GMT file, or the
    Enrichr library downloaded once; the offline default ships inside pyenrichr)."""
    inputs = {}
    if DATASETS[wildcards.dataset]["kind"] == "scrna":
        inputs.update(expression_source_input(wildcards))
    spec = enrichment_settings(config, wildcards.dataset)["gene_sets"]
    if spec.startswith(ENRICHR_PREFIX):
        inputs["gene_sets"] = f"{R}/gene_sets/{spec.removeprefix(ENRICHR_PREFIX)}.gmt"
    elif spec != GO_BP_2023:
        inputs["gene_sets"] = spec
    return inputs


def enrichment_table_inputs(wildcards):
    names = enrichment_variants(wildcards.dataset)
    return {
        "best_selectivity": [
            f"{R}/{wildcards.dataset}/models/{n}/best_selectivity.csv" for n in names
        ],
        "enrichment": [
            f"{R}/{wildcards.dataset}/enrich/{n}/enrichment.parquet" for n in names
        ],
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
