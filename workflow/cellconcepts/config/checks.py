"""The checks of a config that a JSON schema cannot express: keys given twice in a file, input
files that exist and can be read, per-dataset overrides valid once merged, sizes that fit
(ICFL's sparsity, token dimensions, images and the model), tasks, enrichment. Each failure is a
ConfigError naming the key, raised before any job runs."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cellconcepts.config.settings import (
    ConfigError,
    dictionary_settings,
    enrichment_settings,
    variants,
)
from cellconcepts.enrich.modes import ENRICHR_PREFIX, GO_BP_2023, enrichment_mode
from cellconcepts.files import npy_header
from cellconcepts.store import layout


def check_unique_keys(path: Path | str) -> None:
    """A config file (YAML or JSON) names no key twice in one mapping: YAML and JSON loaders
    keep the last of the two and silently drop the first (a whole dataset, say). Raises
    ConfigError naming the file, the key, where it sits and both lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # Snakemake itself names an unreadable config file
        return
    try:
        json.loads(text, object_pairs_hook=_unique_json_pairs)
        return
    except _DuplicateKeyError as err:
        raise ConfigError(
            f"{path}: key {err.key!r} is given twice in one mapping; JSON keeps only the last, "
            "the first is silently lost: rename one or merge them"
        ) from None
    except ValueError:  # not JSON: YAML, as Snakemake reads it next
        pass
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # Snakemake itself refuses a config file that does not parse
        return
    for where, key, first, again in _repeated_keys(root, ""):
        inside = where or "the top level"
        raise ConfigError(
            f"{path}, line {again}: key {key!r} of {inside} is given twice (first on line "
            f"{first}); YAML keeps only the last, so the first is silently lost: rename one "
            "or merge them"
        )


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen[key] = value
    return seen


def _repeated_keys(node: yaml.Node | None, where: str) -> Iterator[tuple[str, str, int, int]]:
    """(where, key, first line, repeated line) of each key given twice in a mapping of a
    composed YAML document, outermost first (merge keys ``<<`` may override, by design)."""
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + 1
            if key in lines:
                yield where, key, lines[key], line
            lines.setdefault(key, line)
            yield from _repeated_keys(value_node, f"{where}.{key}" if where else key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _repeated_keys(item, f"{where}[{i}]")


def check_readable(path: Path, key: str, value: Any) -> None:
    """An input file given by config ``key`` is not empty and can be opened (a folder passes:
    the stage that reads it says what it expected)."""
    if not path.is_file():
        return
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {value!r} ({err.strerror or err})") from None
    if path.stat().st_size == 0:
        raise ConfigError(f"{key}: {value!r} is empty (0 bytes); expected the input file itself")


def check_config(
    config: Mapping[str, Any],
    base_dir: Path | str = ".",
    schema_path: Path | str | None = None,
    config_files: Sequence[Path | str] = (),
) -> list[str]:
    """Check what the schema alone cannot: no key of the ``config_files`` given twice, input
    files exist and can be read, per-dataset dictionary overrides are valid once merged, ICFL
    sparsity is a multiple of L and below the dictionary size and the token dimension, task
    names are unique, images fit the model.

    Raises ConfigError naming the config key, before any job runs; returns warnings (settings
    that run but are probably not what was meant), each naming its key.
    """
    base_dir = Path(base_dir)
    warnings: list[str] = []
    for config_file in config_files:
        check_unique_keys(config_file)
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
                if value is not None:
                    check_readable(base_dir / value, f"{key}.tokens.{path_key}", value)
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
            if source != "pbmc68k_reduced":
                check_readable(base_dir / source, f"{key}.scrna.source", source)
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
        if sparsity >= n_features:
            raise ConfigError(
                f"{key}: dictionary.sparsity {sparsity} is not below dictionary.n_features "
                f"{n_features}: a code with as many non-zeros as the dictionary has features is "
                "not sparse, and the encoders cannot reach it (the tables would report the "
                "configured sparsity, not the codes' real number of non-zeros)"
            )
        if dim is not None and sparsity > dim:
            raise ConfigError(
                f"{key}: dictionary.sparsity {sparsity} exceeds the embedding dimension {dim}: "
                "a code with more non-zeros than the tokens have dimensions is not sparser than "
                "the tokens, ICFL's least-squares steps become rank-deficient and the codes "
                f"fall short of the configured sparsity; choose a sparsity of at most {dim}"
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
        return _file_dim(dataset["tokens"], base_dir, f"datasets.{name}")
    return None


class _NoSuchColumns(Exception):
    def __init__(self, columns: str | list[str], names: list[str]) -> None:
        super().__init__(columns)
        self.columns, self.names = columns, names


def _file_dim(tokens: Mapping[str, Any], base_dir: Path, key: str) -> int | None:
    """Columns of a user's .npy (its header) or .parquet (its schema) embeddings; a file whose
    header cannot be read is refused naming ``key`` (a folder is left to the import stage)."""
    path = base_dir / tokens["path"]
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            shape, _ = npy_header(path)
            return int(shape[1]) if len(shape) == 2 else None
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = tokens.get("embedding_columns")
            names = pq.read_schema(path).names
            if isinstance(columns, list):
                missing = [c for c in columns if c not in names]
            elif isinstance(columns, str):
                missing = [] if any(n.startswith(columns) for n in names) else [columns]
            else:
                missing = []
            if missing:
                raise _NoSuchColumns(columns, names)
            if isinstance(columns, list):
                return len(columns)
            if isinstance(columns, str):
                return sum(1 for n in names if n.startswith(columns))
            if tokens.get("obs_path") is not None:
                return len(names)
            schema = pq.read_schema(path)
            floats = sum(
                1 for f in schema if str(f.type).startswith(("float", "double", "halffloat"))
            )
            return floats or None  # none: the import stage says what it expected
    except _NoSuchColumns as err:
        raise ConfigError(
            f"{key}.tokens.embedding_columns: {err.columns!r} match "
            f"{'no column' if isinstance(err.columns, str) else 'missing columns'} of "
            f"{tokens['path']!r}; columns: {err.names}"
        ) from None
    except Exception as err:  # numpy and pyarrow raise their own kinds for a damaged file
        what = "an .npy array" if suffix == ".npy" else "a Parquet table"
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"{key}.tokens.path: cannot read {tokens['path']!r} as {what} ({first})"
        ) from None
    return None


REPOSITORY = Path(__file__).resolve().parents[3]


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
            check_readable(
                base_dir / section["images"] / required,
                f"{key}.images",
                f"{section['images']}/{required}",
            )
    checkpoint = section["model"]["checkpoint"]
    if checkpoint is not None and not (base_dir / checkpoint).exists():
        raise ConfigError(f"{key}.model.checkpoint: {checkpoint!r} does not exist")
    if checkpoint is not None:
        check_readable(base_dir / checkpoint, f"{key}.model.checkpoint", checkpoint)
    _check_images_fit_model(section, key, base_dir)
    if (
        checkpoint is not None
        and section["model"]["architecture"].get("input_norm") is None
        and not _saved_by_this_workflow(base_dir / checkpoint)
    ):
        raise ConfigError(
            f"{key}.model.architecture.input_norm: say how {checkpoint!r} was trained to see its "
            "images: 'instance_norm' (OpenPhenom: pixels / 255 whatever the dtype, then "
            "InstanceNorm2d), 'instance_norm_fullscale' (8-bit / 255, 16-bit / 65535, floats "
            "as they are, then InstanceNorm2d) or 'standardize' (per-image standardisation); "
            "the wrong one changes every embedding"
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


def _model_input(section: Mapping[str, Any], key: str, base_dir: Path) -> tuple[int, int, str]:
    """(channels, image size) the model takes, and where that is said: the config.json of a
    checkpoint this workflow saved, else ``microscopy.model.architecture``."""
    architecture = section["model"]["architecture"]
    checkpoint = section["model"]["checkpoint"]
    if checkpoint is not None and _saved_by_this_workflow(base_dir / checkpoint):
        saved = json.loads((base_dir / checkpoint / layout.ENCODER_CONFIG).read_text())
        return (
            int(saved.get("in_chans", architecture["in_chans"])),
            int(saved.get("img_size", architecture["img_size"])),
            f"{checkpoint}/{layout.ENCODER_CONFIG}: in_chans, img_size",
        )
    return (
        int(architecture["in_chans"]),
        int(architecture["img_size"]),
        f"{key}.model.architecture: in_chans, img_size",
    )


def _check_images_fit_model(section: Mapping[str, Any], key: str, base_dir: Path) -> None:
    """What the config and the files' headers tell before any job: a user image store's
    images.npy is (n, C, H, W) of the model's channels and size; a screen's LoadData CSV or
    file pattern lists as many channels as the model takes (and the CSV has their columns);
    `browser_rgb` picks channels that exist."""
    channels, size, said = _model_input(section, key, base_dir)
    images = section["images"]
    if isinstance(images, Mapping):
        listed = [str(c) for c in images["channels"]]
        if len(listed) != channels:
            raise ConfigError(
                f"{key}.images.channels: {len(listed)} channels {listed}, but the model takes "
                f"{channels} ({said}); list one channel per model input channel, in the "
                "model's order"
            )
        if "load_data" in images:
            _check_load_data_columns(base_dir / images["load_data"], listed, f"{key}.images")
    elif images != "simulate":
        path = base_dir / images / layout.IMAGES
        try:
            shape, _ = npy_header(path)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{key}.images: {err}") from None
        if len(shape) != 4:
            raise ConfigError(f"{path}: expected shape (n, C, H, W), got {shape} ({key}.images)")
        if shape[1:] != (channels, size, size):
            raise ConfigError(
                f"{path}: images are {shape[1]}x{shape[2]}x{shape[3]} but the model expects "
                f"{channels}x{size}x{size} ({said})"
            )
    rgb = section.get("browser_rgb")
    if rgb is not None and max(rgb) >= channels:
        raise ConfigError(
            f"{key}.browser_rgb: {list(rgb)} names channel {max(rgb)}, but the images have "
            f"{channels} channels (indices 0 to {channels - 1}; {said})"
        )


def _check_load_data_columns(path: Path, channels: Sequence[str], key: str) -> None:
    """A LoadData CSV has FileName_<channel> and PathName_<channel> for every channel."""
    if not path.is_file():
        return  # said by _check_image_source
    import pandas as pd

    try:
        columns = list(pd.read_csv(path, nrows=0).columns)
    except Exception as err:  # pandas raises its own kinds for a file that is not a CSV
        raise ConfigError(f"{key}.load_data: cannot read {path} as a CSV table ({err})") from None
    found = sorted(c.removeprefix("FileName_") for c in columns if c.startswith("FileName_"))
    for channel in channels:
        for prefix in ("FileName_", "PathName_"):
            if prefix + channel not in columns:
                raise ConfigError(
                    f"{path}: no column {prefix + channel} for channel {channel!r} "
                    f"({key}.channels); the CSV has channels {found}"
                )


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
    check_readable(base_dir / images[listing], f"{key}.{listing}", images[listing])


def _saved_by_this_workflow(checkpoint: Path) -> bool:
    """A directory written by `microscopy.checkpoints.save_pretrained` (its config names the input
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
        check_readable(base_dir / spec, f"{key}.gene_sets", spec)


def _definition(schema_path: Path | str, name: str) -> dict[str, Any]:
    """One definition of the schema, standalone (its $refs resolved in place)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    definitions = schema["definitions"]
    return {**definitions[name], "definitions": definitions}


def _dictionary_schema(schema_path: Path | str) -> dict[str, Any]:
    """The schema's `dictionary` definition, standalone (its $refs resolved in place)."""
    return _definition(schema_path, "dictionary")
