"""The workflow's settings as the rules and stages read them: a dataset's merged sections, its
model variants, what one dictionary's training depends on, the gene-set and enrichment modes."""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Mapping
from typing import Any

from cellconcepts.dictionary.settings import SHARED_KEYS, own_keys
from cellconcepts.store import layout
from cellconcepts.variant import Variant


class ConfigError(ValueError):
    """A config value that the schema accepts but the workflow cannot use."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` updated recursively by `override` (neither is modified)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# The keys of `dictionary.train` that a model's training reads (`training_settings`); the
# method's own keys are its settings object's (`dictionary.settings`).
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


def input_source(config: Mapping[str, Any], dataset: str) -> str:
    """The user's file a dataset's token annotations come from, for messages about the token
    store made of it: the obs table or embedding file, the .h5ad, the image store's obs table
    or the screen's listing CSV (the simulated and synthetic datasets have none)."""
    section = config["datasets"][dataset]
    kind = section["kind"]
    if kind == "tokens":
        tokens = section["tokens"]
        return str(tokens.get("obs_path") or tokens["path"])
    if kind == "scrna":
        return str(section["scrna"]["source"])
    if kind == "microscopy":
        images = section["microscopy"]["images"]
        if isinstance(images, Mapping):
            return str(images.get("load_data") or images["metadata"])
        if images != "simulate":
            return f"{images}/{layout.IMAGE_OBS}"
        return f"the simulated screen of datasets.{dataset}"
    return f"the {kind} data of datasets.{dataset}"


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
    them changes; the device and the log and checkpoint cadence are `stages.execution`'s.
    """
    settings = dictionary_settings(config, dataset)
    return {
        "n_features": settings["n_features"],
        **{key: settings[key] for key in SHARED_KEYS},
        method: {key: settings[method][key] for key in own_keys(method)},
        "train": {key: settings["train"][key] for key in TRAIN_KEYS},
    }
