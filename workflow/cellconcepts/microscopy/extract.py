"""Tokens from a ViT encoder: one per image crop, or one per patch position, at chosen layers.

A crop token is the mean of the patch tokens at a layer (the CLS token excluded), as in
Donhauser et al. 2024; for channel-agnostic encoders the mean runs over all (channel, patch)
tokens. Images are normalised as the encoder expects (`ViTConfig.input_norm`) batch by batch,
so arrays larger than memory work. The
encoder is moved to ``device`` and put in eval mode.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cellconcepts.files import PathLike, atomic_path
from cellconcepts.microscopy.checkpoints import CONFIG_FILE, MODEL_TYPE, load_encoder
from cellconcepts.microscopy.vit import (
    ViTConfig,
    ViTEncoder,
    capture_layers,
    check_finite_pixels,
    check_layers,
)

log = logging.getLogger(__name__)

# Images embedded per chunk: bounds memory for screens of millions of crops.
EMBED_CHUNK_IMAGES = 4096


def available_layers(encoder: ViTEncoder) -> list[int]:
    """Layers that can be extracted: 1..depth (layer l = output of block l)."""
    return list(range(1, len(encoder.blocks) + 1))


def _patch_tokens_by_batch(
    encoder: ViTEncoder,
    images: np.ndarray,
    layers: list[int],
    batch_size: int,
    device: str | torch.device,
    progress: bool,
    desc: str,
    where: str = "images",
) -> Iterator[tuple[int, int, dict[int, torch.Tensor]]]:
    """Yield (start, stop, {layer: patch tokens (B, T, D) without the prefix}) per batch."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    encoder.to(device).eval()
    n = int(images.shape[0])
    prefix = encoder.n_prefix
    with torch.inference_mode(), capture_layers(encoder, layers) as captured:
        for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
            stop = min(start + batch_size, n)
            raw = np.asarray(images[start:stop])
            check_finite_pixels(raw, range(start, stop), where)
            x = encoder.normalize(raw).to(device)
            encoder(x, max_layer=layers[-1])
            yield start, stop, {layer: captured[layer][:, prefix:] for layer in layers}


def extract_crop_tokens(
    encoder: ViTEncoder,
    images: np.ndarray,
    layers: Iterable[int],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    where: str = "images",
) -> dict[int, np.ndarray]:
    """One float32 token per image and layer: {layer: (n, D)}, the mean of its patch tokens."""
    wanted = check_layers(encoder, layers)
    encoder.check_images(tuple(images.shape), "images")
    n = int(images.shape[0])
    out = {layer: np.empty((n, encoder.embed_dim), dtype=np.float32) for layer in wanted}
    batches = _patch_tokens_by_batch(
        encoder, images, wanted, batch_size, device, progress, "crop tokens", where
    )
    for start, stop, tokens in batches:
        for layer in wanted:
            out[layer][start:stop] = tokens[layer].mean(dim=1).float().cpu().numpy()
    log.info("extracted crop tokens of %d images at layers %s", n, wanted)
    return out


def extract_patch_tokens(
    encoder: ViTEncoder,
    images: np.ndarray,
    layer: int,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    where: str = "images",
) -> np.ndarray:
    """Patch tokens at one layer on the patch grid: (n, grid_h, grid_w, D) float32.

    For channel-agnostic encoders the channel tokens of each position are averaged, so the
    mean over the grid equals the crop token of :func:`extract_crop_tokens`.
    """
    (layer,) = check_layers(encoder, [layer])
    encoder.check_images(tuple(images.shape), "images")
    grid_h, grid_w = encoder.grid_size
    n = int(images.shape[0])
    out = np.empty((n, grid_h, grid_w, encoder.embed_dim), dtype=np.float32)
    batches = _patch_tokens_by_batch(
        encoder, images, [layer], batch_size, device, progress, "patch tokens", where
    )
    for start, stop, tokens in batches:
        patches = tokens[layer]
        b, t, d = patches.shape
        per_position = patches.reshape(b, t // (grid_h * grid_w), grid_h * grid_w, d).mean(dim=1)
        out[start:stop] = per_position.reshape(b, grid_h, grid_w, d).float().cpu().numpy()
    return out


def check_images_fit(images: np.ndarray, config: ViTConfig, where: PathLike) -> None:
    """The image store's channels and size must be the ones the model expects."""
    _, channels, height, width = images.shape
    if channels != config.in_chans or height != config.img_size or width != config.img_size:
        raise ValueError(
            f"{where}: images are {channels}x{height}x{width} but the model expects "
            f"{config.in_chans}x{config.img_size}x{config.img_size} "
            "(microscopy.model.architecture: in_chans, img_size)"
        )


def load_image_encoder(
    weights: PathLike,
    architecture: Mapping[str, Any],
    device: str,
    config: PathLike | None = None,
) -> ViTEncoder:
    """The encoder of an MAE this workflow trained (its ``config.json`` given as ``config``),
    or of other weights (a file, or e.g. an OpenPhenom Hugging Face directory) whose
    architecture the config describes."""
    path = Path(weights)
    if config is not None:
        return load_encoder(Path(config).parent, device=device)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        if json.loads((path / CONFIG_FILE).read_text()).get("model_type") == MODEL_TYPE:
            return load_encoder(path, device=device)  # a directory this workflow saved
    return load_encoder(path, ViTConfig.from_dict(dict(architecture)), device=device)


def write_layer_tokens(
    encoder: ViTEncoder,
    images: np.ndarray,
    layers: Sequence[int],
    path: PathLike,
    *,
    batch_size: int,
    device: str,
    where: str = "images",
) -> None:
    """One token per image (mean of patch tokens) at each of ``layers``, as one float32 .npy
    array (n_layers, n_images, D) in the order of ``layers``. Computed in chunks of images so
    screens of millions of crops fit in memory; written under a temporary name and renamed into
    place."""
    valid = available_layers(encoder)
    bad = sorted(set(layers) - set(valid))
    if bad or not layers:
        raise ValueError(
            f"microscopy.layer: {bad or list(layers)} are not blocks of this model "
            f"(valid: 1..{valid[-1]})"
        )
    n = len(images)
    shape = (len(layers), n, encoder.embed_dim)
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        for start in range(0, n, EMBED_CHUNK_IMAGES):
            stop = min(start + EMBED_CHUNK_IMAGES, n)
            chunk = np.asarray(images[start:stop])
            check_finite_pixels(chunk, range(start, stop), where)
            tokens = extract_crop_tokens(
                encoder, chunk, layers, batch_size=batch_size, device=device
            )
            for i, layer in enumerate(layers):
                out[i, start:stop] = tokens[layer]
        out.flush()
        del out
    log.info("embedded %d images at layers %s", n, list(layers))
