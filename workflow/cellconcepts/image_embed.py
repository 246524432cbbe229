"""Tokens from a ViT encoder: one per image crop, or one per patch position, at chosen layers.

A crop token is the mean of the patch tokens at a layer (the CLS token excluded), as in
Donhauser et al. 2024; for channel-agnostic encoders the mean runs over all (channel, patch)
tokens. Images are self-standardised batch by batch, so arrays larger than memory work. The
encoder is moved to ``device`` and put in eval mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from cellconcepts.vit import ViTEncoder, capture_layers, check_layers, self_standardize

log = logging.getLogger(__name__)


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
            x = self_standardize(np.asarray(images[start:stop])).to(device)
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
) -> dict[int, np.ndarray]:
    """One float32 token per image and layer: {layer: (n, D)}, the mean of its patch tokens."""
    wanted = check_layers(encoder, layers)
    encoder.check_images(tuple(images.shape), "images")
    n = int(images.shape[0])
    out = {layer: np.empty((n, encoder.embed_dim), dtype=np.float32) for layer in wanted}
    batches = _patch_tokens_by_batch(
        encoder, images, wanted, batch_size, device, progress, "crop tokens"
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
        encoder, images, [layer], batch_size, device, progress, "patch tokens"
    )
    for start, stop, tokens in batches:
        patches = tokens[layer]
        b, t, d = patches.shape
        per_position = patches.reshape(b, t // (grid_h * grid_w), grid_h * grid_w, d).mean(dim=1)
        out[start:stop] = per_position.reshape(b, grid_h, grid_w, d).float().cpu().numpy()
    return out
