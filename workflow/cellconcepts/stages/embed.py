"""Stages of workflow/rules/embed.smk: expression or images (or a user's own embeddings) ->
a token store. scRNA: an autoencoder trained here, or an existing ``obsm`` key; microscopy: a
ViT MAE trained here (or a user checkpoint), tokens of every layer to probe, then the chosen
layer's tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from cellconcepts.device import resolve_device, set_threads
from cellconcepts.evaluate.probing import ProbeSettings
from cellconcepts.files import PathLike, atomic_path
from cellconcepts.report.tables import write_table
from cellconcepts.store import layout
from cellconcepts.store import obs as token_obs
from cellconcepts.store.images import open_image_store
from cellconcepts.store.layout import ImageFiles, TokenFiles
from cellconcepts.store.readers import read_embeddings
from cellconcepts.store.tokens import write_token_store

log = logging.getLogger(__name__)

# torch, scanpy and the modules built on them are imported inside the stages that use them,
# so that the light jobs of other stages start without paying for the import.


def train_expression_model(
    *,
    model: PathLike,
    history: PathLike,
    source: str,
    autoencoder: Mapping[str, Any],
    threads: int | None = None,
    execution: Mapping[str, Any],
    expression: PathLike | None = None,
) -> None:
    """scRNA: train the small expression autoencoder whose latent space gives the tokens.

    ``expression`` is the user's .h5ad (the rule's input; the source names it too), absent for
    the data shipped inside scanpy."""
    from cellconcepts.sources import expression, scrna

    set_threads(threads)
    adata = expression.load_expression(source)
    trained, curve = scrna.train_expression_autoencoder(
        expression.expression_matrix(adata.X, name=f"{source} X"),
        device=str(resolve_device(execution["device"])),
        **autoencoder,
    )
    scrna.save_expression_model(
        trained, model, {"source": source, "n_genes": int(adata.n_vars), **autoencoder}
    )
    with atomic_path(history) as tmp:
        curve.to_csv(tmp, index=False)
    log.info("autoencoder trained: loss %.4f -> %.4f", curve.loss.iloc[0], curve.loss.iloc[-1])


def embed_scrna(
    *,
    tokens: PathLike,
    obs: PathLike,
    source: str,
    embedding: str,
    control: str | Mapping[str, Any],
    split: Mapping[str, Any],
    label_columns: Sequence[str],
    model: PathLike | None = None,
    expression: PathLike | None = None,
) -> None:
    """scRNA: cell embeddings (the trained autoencoder, or an existing obsm key) -> token store."""
    from cellconcepts.sources import expression, scrna

    adata = expression.load_expression(source)
    if embedding == "autoencoder":
        if model is None:
            raise ValueError("scrna.embedding 'autoencoder' needs the trained model as input")
        trained, _ = scrna.load_expression_model(model)
        values = scrna.embed_cells(
            trained, expression.expression_matrix(adata.X, name=f"{source} X")
        )
    else:
        key = embedding.removeprefix("obsm:")
        if key not in adata.obsm:
            raise ValueError(
                f"scrna.embedding {embedding!r}: obsm key {key!r} not in {source}; "
                f"available: {list(adata.obsm.keys())}"
            )
        values = np.asarray(adata.obsm[key], dtype=np.float32)
    table = adata.obs.copy()
    table["obs_name"] = adata.obs_names.astype(str)
    try:
        annotated = token_obs.annotate_obs(
            table, control=control, split=split, label_columns=label_columns
        )
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    write_token_store(TokenFiles(tokens, obs), values, annotated)


def import_tokens(
    *,
    embeddings: PathLike,
    tokens: PathLike,
    obs: PathLike,
    obsm_key: str | None,
    embedding_columns: str | list[str] | None,
    control: str | Mapping[str, Any] | None,
    split: Mapping[str, Any],
    label_columns: Sequence[str],
    obs_table: PathLike | None = None,
) -> None:
    """A user's embeddings (h5ad X/obsm, parquet, npy + obs table) -> token store."""
    values, table = read_embeddings(
        embeddings, obsm_key=obsm_key, obs_path=obs_table, embedding_columns=embedding_columns
    )
    try:
        annotated = token_obs.annotate_obs(
            table, control=control, split=split, label_columns=label_columns
        )
    except ValueError as err:
        raise ValueError(f"{obs_table or embeddings}: {err}") from err
    write_token_store(TokenFiles(tokens, obs), values, annotated)


def import_images(
    *,
    listing: PathLike,
    images: PathLike,
    image_obs: PathLike,
    source: Mapping[str, Any],
) -> None:
    """A screen in its microscope layout (``source``: `microscopy.images`, a LoadData CSV or a
    file pattern + metadata) -> an image store, read one image at a time
    (`store.image_sources`)."""
    from cellconcepts.store.image_sources import ImageSource
    from cellconcepts.store.image_sources import import_images as write_store

    screen = ImageSource.from_config(source)
    if Path(screen.table) != Path(listing):
        raise ValueError(f"import_images: the listing is {screen.table}, not {listing}")
    write_store(screen, ImageFiles(Path(images), Path(image_obs)))


def train_mae(
    *,
    images: PathLike,
    image_obs: PathLike,
    encoder_config: PathLike,
    encoder_weights: PathLike,
    history: PathLike,
    architecture: Mapping[str, Any],
    mae: Mapping[str, Any],
    checkpoint: PathLike,
    threads: int | None = None,
    execution: Mapping[str, Any],
) -> None:
    """Train the demo's masked autoencoder on the image store; save its encoder."""
    from cellconcepts.microscopy import checkpoints, vit
    from cellconcepts.microscopy.extract import check_images_fit
    from cellconcepts.microscopy.mae import MAEConfig
    from cellconcepts.microscopy.mae import train_mae as train

    directory = Path(encoder_weights).parent
    expected = (directory / layout.ENCODER_CONFIG, directory / layout.ENCODER_WEIGHTS)
    if (Path(encoder_config), Path(encoder_weights)) != expected:
        raise ValueError(f"train_mae: the encoder's outputs must be {[str(p) for p in expected]}")
    set_threads(threads)
    store = open_image_store(ImageFiles(Path(images), Path(image_obs)))
    vit_config = vit.ViTConfig.from_dict(dict(architecture))
    check_images_fit(store.images, vit_config, images)
    names = {f.name for f in fields(MAEConfig)}
    model, curve = train(
        store.images,
        vit_config,
        MAEConfig(**{k: v for k, v in mae.items() if k in names}),
        device=str(resolve_device(execution["device"])),
        checkpoint_path=checkpoint,
        where=str(images),
        **{k: v for k, v in mae.items() if k not in names},
    )
    checkpoints.save_pretrained(
        model.encoder, directory, extra_meta={"mae": dict(mae), "images": str(images)}
    )
    with atomic_path(history) as tmp:
        curve.to_csv(tmp, index=False)
    log.info("MAE trained: loss %.4f -> %.4f", curve.loss.iloc[0], curve.loss.iloc[-1])


def embed_images(
    *,
    images: PathLike,
    image_obs: PathLike,
    encoder: PathLike,
    layer_tokens: PathLike,
    layers: Sequence[int],
    architecture: Mapping[str, Any],
    threads: int | None = None,
    execution: Mapping[str, Any],
    encoder_config: PathLike | None = None,
) -> None:
    """One token per image (mean of patch tokens) at every layer to probe: an array
    (n_layers, n_images, D), ``layers`` in order."""
    from cellconcepts.microscopy.extract import (
        check_images_fit,
        load_image_encoder,
        write_layer_tokens,
    )

    set_threads(threads)
    device = str(resolve_device(execution["device"]))
    store = open_image_store(ImageFiles(Path(images), Path(image_obs)))
    model = load_image_encoder(encoder, architecture, device, config=encoder_config)
    check_images_fit(store.images, model.config, images)
    write_layer_tokens(
        model,
        store.images,
        [int(n) for n in layers],
        layer_tokens,
        batch_size=execution["batch_size"],
        device=device,
        where=str(images),
    )


def choose_layer(
    *,
    image_obs: PathLike,
    layer_tokens: PathLike,
    tokens: PathLike,
    obs: PathLike,
    choice: PathLike,
    table: Sequence[PathLike],
    figure: Sequence[PathLike],
    layers: Sequence[int],
    layer: int | str,
    layer_task: str,
    tasks: Sequence[Mapping[str, Any]],
    control: str | Mapping[str, Any] | None,
    split: Mapping[str, Any],
    probe: Mapping[str, Any],
    min_label_size: int = 1,
    threads: int | None = None,
) -> None:
    """Probe every extracted layer on every task; the chosen layer's tokens become the store
    (`microscopy.layers`)."""
    import pandas as pd

    from cellconcepts.microscopy.figures import plot_layer_probing
    from cellconcepts.microscopy.layers import choose_layer as choose
    from cellconcepts.microscopy.layers import probe_layers

    set_threads(threads)
    images_obs = pd.read_parquet(image_obs)
    images_obs["token_id"] = images_obs["image_id"].astype(str)
    try:
        annotated = token_obs.annotate_obs(
            images_obs, control=control, split=split, label_columns=[t["column"] for t in tasks]
        )
    except ValueError as err:
        raise ValueError(f"{image_obs}: {err}") from err
    stacked = np.load(layer_tokens, mmap_mode="r")
    if stacked.shape[0] != len(layers):
        raise ValueError(f"{layer_tokens}: {stacked.shape[0]} layers, expected {list(layers)}")
    values = {int(n): stacked[i] for i, n in enumerate(layers)}
    probes = probe_layers(values, annotated, tasks, ProbeSettings(**probe), min_label_size)
    chosen = choose(probes, layer, layer_task)
    probes["chosen"] = probes["layer"] == chosen.layer
    write_table(probes, table[0], caption="probe BTA of each layer's tokens per task")
    plot_layer_probing(probes, chosen.layer, layer_task, figure[0])
    write_token_store(TokenFiles(tokens, obs), values[chosen.layer], annotated)
    with atomic_path(choice) as tmp:
        tmp.write_text(json.dumps(chosen.to_dict(), indent=2))
    log.info("layer %d chosen (best on %s: layer %d)", chosen.layer, layer_task, chosen.best_layer)
