"""The workflow's configuration: per-dataset settings, model variants, execution settings, and
the checks a JSON schema cannot express.

The Snakefile validates the config against `workflow/schemas/config.schema.yaml` first
(types, unknown keys, defaults), then calls `check_config`.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cellconcepts.store import layout

VARIANT_PATTERN = re.compile(
    r"^(?P<method>icfl|topk)_(?P<whitening>pca|none)_k(?P<sparsity>\d+)_seed(?P<seed>\d+)$"
)


class ConfigError(ValueError):
    """A config value that the schema accepts but the workflow cannot use."""


@dataclass(frozen=True)
class Variant:
    """One trained model: (method, whitening, sparsity, seed) on one dataset."""

    method: str
    whitening: str
    sparsity: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}_{self.whitening}_k{self.sparsity}_seed{self.seed}"

    @classmethod
    def parse(cls, name: str) -> Variant:
        match = VARIANT_PATTERN.match(name)
        if match is None:
            raise ConfigError(
                f"model variant {name!r} is not of the form "
                "'<icfl|topk>_<pca|none>_k<sparsity>_seed<seed>'"
            )
        return cls(
            method=match["method"],
            whitening=match["whitening"],
            sparsity=int(match["sparsity"]),
            seed=int(match["seed"]),
        )


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` updated recursively by `override` (neither is modified)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# The keys of the dictionary section that a model's training reads (`training_settings`): the
# method's own, and learn_b_pre, which applies to both methods.
ICFL_KEYS = ("atoms_per_iteration", "selection", "resample_every", "resample_threshold")
TOPK_KEYS = ("aux_k", "aux_coef", "resample_every", "resample_threshold")
TRAIN_KEYS = (
    "steps",
    "batch_size",
    "lr",
    "dead_window",
    "dead_fraction",
    "buffer_tokens",
    "chunk_tokens",
)


def dictionary_settings(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Global `dictionary` section with the dataset's own `dictionary` overrides applied."""
    return deep_merge(config["dictionary"], config["datasets"][dataset].get("dictionary", {}))


# Gene-set settings (the library itself is read by cellconcepts.enrich.genesets).
GO_BP_2023 = "GO_Biological_Process_2023"
ENRICHR_PREFIX = "enrichr:"
EXPRESSION, SCREEN = "expression", "screen"


def enrichment_mode(kind: str) -> str | None:
    """How a dataset's features get genes: scRNA by differential expression ("expression"),
    screens by selectivity for the perturbed genes ("screen"); other kinds have no genes."""
    return {"scrna": EXPRESSION, "microscopy": SCREEN}.get(kind)


def enrichment_settings(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Global `enrich` section with the dataset's own `enrich` overrides applied."""
    return deep_merge(config["enrich"], config["datasets"][dataset].get("enrich", {}))


def variants(config: Mapping[str, Any], dataset: str) -> list[Variant]:
    """Every (method, whitening, sparsity, seed) model to train for a dataset."""
    settings = dictionary_settings(config, dataset)
    return [
        Variant(method, whitening, int(sparsity), int(seed))
        for method in settings["methods"]
        for whitening in config["whitening"]["methods"]
        for sparsity in settings["sparsity"]
        for seed in settings["seeds"]
    ]


def enrichment_variants(config: Mapping[str, Any], dataset: str) -> list[str]:
    """The models whose features GO enrichment annotates: those matching a pattern of
    `enrich.variants` (names or shell-style patterns such as ``*_seed0``), else every model."""
    patterns = enrichment_settings(config, dataset)["variants"]
    names = [v.name for v in variants(config, dataset)]
    if patterns is None:
        return names
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def training_settings(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, Any]:
    """What one dictionary's training depends on besides its variant (method, whitening,
    sparsity, seed): the dictionary size, the method's own settings and the optimisation.

    Plain values only (a rule's params), so that Snakemake reruns a model exactly when one of
    them changes; the device and the log and checkpoint cadence are `execution_settings`.
    """
    settings = dictionary_settings(config, dataset)
    own = (
        {k: settings["icfl"][k] for k in ICFL_KEYS}
        if method == "icfl"
        else {k: settings["topk"][k] for k in TOPK_KEYS}
    )
    train = {k: settings["train"][k] for k in TRAIN_KEYS}
    return {
        "n_features": settings["n_features"],
        "learn_b_pre": settings["learn_b_pre"],
        method: own,
        "train": train,
    }


# Rules whose stage can run on a GPU: `execution_settings` gives them a `device`. Each declares
# `gpu=1` in its resources, the one place a GPU is requested: the local profile limits how many
# run at once and the SLURM executor sends them to a partition that has GPUs.
GPU_RULES = frozenset(
    {
        "train_expression_model",
        "train_mae",
        "embed_images",
        "heatmap_patch_tokens",
        "train_dictionary",
        "encode_tokens",
    }
)


def execution_settings(config: Mapping[str, Any], rule: str, dataset: str | None) -> dict[str, Any]:
    """Config keys that change how a rule's job runs but never what it computes: the device,
    inference batch sizes, logging and checkpoint cadence, the CellProfiler executable.

    Stages read them from the config at run time (`cellconcepts.stages.arguments`) instead of
    the rule's params, so that editing them reruns nothing.
    """
    if dataset is None:
        return {}
    section = config["datasets"][dataset]
    train = dictionary_settings(config, dataset)["train"]
    microscopy = section.get("microscopy", {})
    images = {"device": microscopy.get("device"), "batch_size": microscopy.get("batch_size")}
    by_rule = {
        "train_expression_model": {"device": train["device"]},
        "train_dictionary": {
            "device": train["device"],
            "log_every": train["log_every"],
            "checkpoint_every": train["checkpoint_every"],
        },
        "encode_tokens": {"device": train["device"], "batch_size": config["encode"]["batch_size"]},
        "train_mae": {"device": microscopy.get("device")},
        "embed_images": images,
        "heatmap_patch_tokens": images,
        "cellprofiler_measure": {
            "executable": microscopy.get("cellprofiler", {}).get("executable"),
        },
    }
    return dict(by_rule.get(rule, {}))


def check_config(
    config: Mapping[str, Any], base_dir: Path | str = ".", schema_path: Path | str | None = None
) -> list[str]:
    """Check what the schema alone cannot: input files exist, per-dataset dictionary overrides
    are valid once merged, ICFL sparsity is a multiple of L, task names are unique.

    Raises ConfigError naming the config key, before any job runs; returns warnings (settings
    that run but are probably not what was meant), each naming its key.
    """
    base_dir = Path(base_dir)
    warnings: list[str] = []
    dictionary_schema = _dictionary_schema(schema_path) if schema_path else None
    for name, dataset in config["datasets"].items():
        key = f"datasets.{name}"
        kind = dataset["kind"]
        if kind not in dataset:
            raise ConfigError(f"{key}: kind is {kind!r} but the section {key}.{kind} is missing")
        if kind == "tokens":
            for path_key in ("path", "obs_path"):
                value = dataset["tokens"].get(path_key)
                if value is not None and not (base_dir / value).exists():
                    raise ConfigError(
                        f"{key}.tokens.{path_key}: input file {value!r} does not exist "
                        f"(relative paths are resolved from {base_dir.resolve()})"
                    )
            columns = dataset["tokens"].get("embedding_columns")
            if isinstance(columns, list):
                repeated = sorted({c for c in columns if columns.count(c) > 1})
                if repeated:
                    raise ConfigError(
                        f"{key}.tokens.embedding_columns: {', '.join(map(repr, repeated))} "
                        "listed more than once; each column is one dimension of the tokens"
                    )
        if kind == "scrna":
            source = dataset["scrna"]["source"]
            if source != "pbmc68k_reduced" and not (base_dir / source).exists():
                raise ConfigError(
                    f"{key}.scrna.source: expected 'pbmc68k_reduced' or an existing .h5ad file, "
                    f"got {source!r}"
                )
        task_names = [task["name"] for task in dataset["tasks"]]
        duplicated = sorted({t for t in task_names if task_names.count(t) > 1})
        if duplicated:
            raise ConfigError(f"{key}.tasks: task names must be unique, repeated: {duplicated}")
        if kind == "microscopy":
            _check_microscopy(config, name, base_dir, task_names)
        if "enrich" in config and enrichment_mode(kind) is not None:
            _check_enrichment(config, name, base_dir, task_names, schema_path)
        settings = dictionary_settings(config, name)
        if dictionary_schema is not None:
            errors = _schema_errors(dictionary_schema, settings)
            if errors:
                where = ".".join(str(p) for p in errors[0].absolute_path)
                raise ConfigError(
                    f"{key}.dictionary.{where}: {errors[0].message}".replace("..", ".")
                )
        _check_sizes(config, name, settings, base_dir, warnings)
    return warnings


def _schema_errors(schema: Mapping[str, Any], value: Any) -> list[Any]:
    """The schema's validation errors for ``value``, in path order (jsonschema is imported
    here: only the config check needs it, not the jobs)."""
    import jsonschema

    errors = jsonschema.Draft202012Validator(schema).iter_errors(value)
    return sorted(errors, key=lambda e: list(e.absolute_path))


def _check_sizes(
    config: Mapping[str, Any],
    name: str,
    settings: Mapping[str, Any],
    base_dir: Path,
    warnings: list[str],
) -> None:
    """Sparsity against the dictionary size and the embedding dimension, PCA components
    against the dimension, ICFL sparsity against L, the shuffle buffer against its chunks."""
    key = f"datasets.{name}"
    n_features = settings["n_features"]
    dim = embedding_dim(config, name, base_dir)
    for sparsity in settings["sparsity"]:
        if sparsity > n_features:
            raise ConfigError(
                f"{key}: dictionary.sparsity {sparsity} exceeds dictionary.n_features "
                f"{n_features}; a token cannot use more features than the dictionary has"
            )
        if dim is not None and sparsity > dim:
            warnings.append(
                f"{key}: dictionary.sparsity {sparsity} exceeds the embedding dimension {dim}: "
                "codes with more non-zeros than the tokens have dimensions are not sparser than "
                "the tokens, and ICFL's least-squares steps become rank-deficient"
            )
        if "icfl" in settings["methods"]:
            per_iteration = settings["icfl"]["atoms_per_iteration"]
            if sparsity % per_iteration:
                raise ConfigError(
                    f"{key}: dictionary.sparsity {sparsity} is not a multiple of "
                    f"dictionary.icfl.atoms_per_iteration {per_iteration} "
                    "(ICFL sparsity is J*L)"
                )
    train = settings["train"]
    if train["chunk_tokens"] > train["buffer_tokens"]:
        raise ConfigError(
            f"{key}: dictionary.train.chunk_tokens {train['chunk_tokens']} exceeds "
            f"dictionary.train.buffer_tokens {train['buffer_tokens']}; the shuffle buffer holds "
            "whole chunks"
        )
    components = config.get("whitening", {}).get("n_components")
    if dim is not None and components is not None and components > dim:
        raise ConfigError(
            f"whitening.n_components: {components} components, but dataset {name!r} has "
            f"{dim}-dimensional embeddings"
        )


def embedding_dim(config: Mapping[str, Any], name: str, base_dir: Path) -> int | None:
    """The dimension of a dataset's tokens, where the config or a file header tells it without
    reading the data (None otherwise)."""
    dataset = config["datasets"][name]
    kind = dataset["kind"]
    if kind == "synthetic":
        return int(dataset["synthetic"]["n_dims"])
    if kind == "scrna" and dataset["scrna"]["embedding"] == "autoencoder":
        return int(dataset["scrna"]["autoencoder"]["latent_dim"])
    if kind == "microscopy":
        return int(dataset["microscopy"]["model"]["architecture"]["embed_dim"])
    if kind == "tokens":
        return _file_dim(dataset["tokens"], base_dir)
    return None


def _file_dim(tokens: Mapping[str, Any], base_dir: Path) -> int | None:
    """Columns of a user's .npy (its header) or .parquet (its schema) embeddings."""
    path = base_dir / tokens["path"]
    try:
        if path.suffix.lower() == ".npy":
            import numpy as np

            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return int(shape[1]) if len(shape) == 2 else None
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            columns = tokens.get("embedding_columns")
            if isinstance(columns, list):
                return len(columns)
            schema = pq.read_schema(path)
            if isinstance(columns, str):
                return sum(1 for n in schema.names if n.startswith(columns))
            if tokens.get("obs_path") is not None:
                return len(schema.names)
            return sum(
                1 for f in schema if str(f.type).startswith(("float", "double", "halffloat"))
            )
    except (OSError, ValueError):  # unreadable: the import stage names the file
        return None
    return None


REPOSITORY = Path(__file__).resolve().parents[2]


def resolve_shipped(path: str, base_dir: Path) -> Path | None:
    """A config path relative to the working directory, else to this repository (files the
    workflow ships, e.g. resources/); None if neither exists."""
    for candidate in (base_dir / path, REPOSITORY / path):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _check_microscopy(
    config: Mapping[str, Any], name: str, base_dir: Path, task_names: list[str]
) -> None:
    key = f"datasets.{name}.microscopy"
    section = config["datasets"][name]["microscopy"]
    if isinstance(section["images"], Mapping):
        _check_image_source(section["images"], f"{key}.images", base_dir)
    elif section["images"] != "simulate":
        for required in (layout.IMAGES, layout.IMAGE_OBS):
            if not (base_dir / section["images"] / required).exists():
                raise ConfigError(
                    f"{key}.images: expected 'simulate' or a directory holding images.npy and "
                    f"obs.parquet; {section['images']!r} has no {required}"
                )
    checkpoint = section["model"]["checkpoint"]
    if checkpoint is not None and not (base_dir / checkpoint).exists():
        raise ConfigError(f"{key}.model.checkpoint: {checkpoint!r} does not exist")
    if (
        checkpoint is not None
        and section["model"]["architecture"].get("input_norm") is None
        and not _saved_by_this_workflow(base_dir / checkpoint)
    ):
        raise ConfigError(
            f"{key}.model.architecture.input_norm: say how {checkpoint!r} was trained to see its "
            "images: 'instance_norm' (OpenPhenom: pixels / 255, then InstanceNorm2d) or "
            "'standardize' (per-image standardisation); the wrong one changes every embedding"
        )
    for task_key, task in (
        ("layer_task", section["layer_task"]),
        ("heatmaps.task", section["heatmaps"]["task"]),
    ):
        if task not in task_names:
            raise ConfigError(f"{key}.{task_key}: {task!r} is not one of the tasks {task_names}")
    chosen = section["heatmaps"]["variant"]
    names = [v.name for v in variants(config, name)]
    if chosen is not None and chosen not in names:
        raise ConfigError(f"{key}.heatmaps.variant: {chosen!r} is not one of the models {names}")
    cp = section["cellprofiler"]
    if cp["enabled"]:
        if cp["task"] not in task_names:
            raise ConfigError(
                f"{key}.cellprofiler.task: {cp['task']!r} is not one of the tasks {task_names}"
            )
        for channel_key in ("nucleus_channel", "cytoplasm_channel"):
            if cp[channel_key] not in cp["channels"]:
                raise ConfigError(
                    f"{key}.cellprofiler.{channel_key}: {cp[channel_key]!r} is not one of "
                    f"cellprofiler.channels {cp['channels']}"
                )
        if cp["backend"] != "cp_measure" and resolve_shipped(cp["pipeline"], base_dir) is None:
            raise ConfigError(f"{key}.cellprofiler.pipeline: {cp['pipeline']!r} does not exist")


def _check_image_source(images: Mapping[str, Any], key: str, base_dir: Path) -> None:
    """A screen in its microscope layout: one listing (a LoadData CSV, or a pattern with a
    metadata table), and the listing exists."""
    if ("load_data" in images) == ("files" in images):
        raise ConfigError(
            f"{key}: give load_data (a LoadData CSV) or files (a file name pattern) with "
            "metadata, one of the two"
        )
    if "files" in images and "metadata" not in images:
        raise ConfigError(f"{key}.metadata: files needs a metadata table (one row per image)")
    listing = "load_data" if "load_data" in images else "metadata"
    if not (base_dir / images[listing]).is_file():
        raise ConfigError(f"{key}.{listing}: {images[listing]!r} does not exist")


def _saved_by_this_workflow(checkpoint: Path) -> bool:
    """A directory written by `microscopy.vit.save_pretrained` (its config names the input
    normalisation)."""
    config = checkpoint / layout.ENCODER_CONFIG
    if not (checkpoint.is_dir() and config.is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == layout.ENCODER_MODEL_TYPE
    except (OSError, ValueError):
        return False


def _check_enrichment(
    config: Mapping[str, Any],
    name: str,
    base_dir: Path,
    task_names: list[str],
    schema_path: Path | str | None,
) -> None:
    key = f"datasets.{name}.enrich"
    settings = enrichment_settings(config, name)
    if schema_path is not None:
        errors = _schema_errors(_definition(schema_path, "enrich"), settings)
        if errors:
            where = ".".join(str(p) for p in errors[0].absolute_path)
            raise ConfigError(f"{key}.{where}: {errors[0].message}".replace("..", "."))
    if not settings["enabled"]:
        return
    if settings["min_term_size"] > settings["max_term_size"]:
        raise ConfigError(
            f"{key}: min_term_size {settings['min_term_size']} exceeds max_term_size "
            f"{settings['max_term_size']}"
        )
    task = settings["label_task"]
    if task is not None and task not in task_names:
        raise ConfigError(f"{key}.label_task: {task!r} is not one of the tasks {task_names}")
    screen = settings["screen"]
    images = config["datasets"][name].get("microscopy", {}).get("images", "simulate")
    obs_path = base_dir / str(images) / layout.IMAGE_OBS
    if images != "simulate" and obs_path.is_file():
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            columns = pq.read_schema(obs_path).names
        except (OSError, pa.ArrowInvalid):  # unreadable: the embedding stage names the file
            columns = [screen["gene_column"]]
        if screen["gene_column"] not in columns:
            raise ConfigError(
                f"{key}.screen.gene_column: {screen['gene_column']!r} is not a column of "
                f"{obs_path} (columns: {columns}); name the column of perturbed genes, or set "
                f"{key}.enabled: false"
            )
    if screen["min_selectivity"] is None and screen["top_n"] == 0:
        raise ConfigError(f"{key}.screen: min_selectivity is null and top_n is 0: lists no gene")
    names = [v.name for v in variants(config, name)]
    unknown = [
        p for p in settings["variants"] or [] if not any(fnmatch.fnmatchcase(n, p) for n in names)
    ]
    if unknown:
        raise ConfigError(f"{key}.variants: {unknown} match no model of this dataset: {names}")
    spec = settings["gene_sets"]
    if spec != GO_BP_2023 and not spec.startswith(ENRICHR_PREFIX):
        if not (base_dir / spec).is_file():
            raise ConfigError(
                f"{key}.gene_sets: {spec!r} is neither {GO_BP_2023!r}, an existing GMT file "
                "nor 'enrichr:<library>'"
            )


def _definition(schema_path: Path | str, name: str) -> dict[str, Any]:
    """One definition of the schema, standalone (its $refs resolved in place)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    definitions = schema["definitions"]
    return {**definitions[name], "definitions": definitions}


def _dictionary_schema(schema_path: Path | str) -> dict[str, Any]:
    """The schema's `dictionary` definition, standalone (its $refs resolved in place)."""
    return _definition(schema_path, "dictionary")
