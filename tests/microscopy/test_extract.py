"""Crop and patch tokens: equal to a forward pass written out here, independent of batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellconcepts.microscopy import extract as image_embed
from cellconcepts.microscopy.vit import ViTConfig, ViTEncoder

TINY = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=3, num_heads=2)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_encoder(**overrides) -> ViTEncoder:
    torch.manual_seed(0)
    encoder = ViTEncoder(ViTConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for param in encoder.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return encoder.eval()


@pytest.fixture
def plate(tmp_path) -> np.ndarray:
    """Eleven uint16 crops (3 x 16 x 16), memory-mapped like the image store."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 20000, size=(11, 3, 16, 16)).astype(np.uint16)
    data[:, 1] //= 9  # a dim channel
    np.save(tmp_path / "images.npy", data)
    return np.load(tmp_path / "images.npy", mmap_mode="r")


def manual_patch_tokens(encoder: ViTEncoder, raw: np.ndarray, layer: int) -> np.ndarray:
    """Patch tokens (n, T, D) at `layer`, standardising with numpy and patchifying by hand."""
    x = raw.astype(np.float64)
    x = (x - x.mean(axis=(2, 3), keepdims=True)) / (x.std(axis=(2, 3), keepdims=True) + 1e-6)
    n, c = x.shape[:2]
    grid = x.reshape(n, c, 4, 4, 4, 4).transpose(0, 2, 4, 1, 3, 5)  # n, gh, gw, c, p, p
    weight = encoder.patch_embed.proj.weight.detach().double()
    bias = encoder.patch_embed.proj.bias.detach().double()
    if encoder.config.channel_agnostic:
        # (n, c, gh, gw, p*p): every channel through the shared 1-channel projection, channel-major.
        patches = torch.from_numpy(grid.transpose(0, 3, 1, 2, 4, 5).reshape(n, c * 16, 16))
        tokens = patches @ weight.reshape(32, 16).T + bias
        tokens = tokens + encoder.pos_embed[0, 1 : 1 + c * 16].double()
        channel = encoder.channel_embed[0, :c].double().expand(c, 16, 32).reshape(c * 16, 32)
        tokens = tokens + channel
    else:
        patches = torch.from_numpy(grid.reshape(n, 16, c * 16))
        tokens = patches @ weight.reshape(32, c * 16).T + bias + encoder.pos_embed[0, 1:].double()
    cls = (encoder.cls_token + encoder.pos_embed[:, :1]).double().expand(n, 1, 32)
    hidden = torch.cat([cls, tokens], dim=1).float()
    with torch.no_grad():
        for block in encoder.blocks[:layer]:
            hidden = block(hidden)
    return hidden[:, 1:].numpy()


def test_crop_tokens_equal_manual_forward(plate):
    encoder = tiny_encoder()
    tokens = image_embed.extract_crop_tokens(encoder, plate, [3, 1], batch_size=4, progress=False)
    assert sorted(tokens) == [1, 3]
    for layer in (1, 3):
        assert tokens[layer].dtype == np.float32 and tokens[layer].shape == (11, 32)
        expected = manual_patch_tokens(encoder, np.asarray(plate), layer).mean(axis=1)
        np.testing.assert_allclose(tokens[layer], expected, atol=2e-5)


def test_batch_size_does_not_change_tokens(plate):
    encoder = tiny_encoder()
    reference = image_embed.extract_crop_tokens(encoder, plate, [2], batch_size=64, progress=False)
    for batch_size in (1, 3):
        other = image_embed.extract_crop_tokens(
            encoder, plate, [2], batch_size=batch_size, progress=False
        )
        np.testing.assert_allclose(other[2], reference[2], atol=1e-5)


def test_patch_tokens_on_grid_average_to_crop_token(plate):
    encoder = tiny_encoder()
    patches = image_embed.extract_patch_tokens(encoder, plate, 2, batch_size=5, progress=False)
    assert patches.shape == (11, 4, 4, 32) and patches.dtype == np.float32
    manual = manual_patch_tokens(encoder, np.asarray(plate), 2)
    np.testing.assert_allclose(patches[:, 1, 3], manual[:, 1 * 4 + 3], atol=2e-5)  # row-major
    crop = image_embed.extract_crop_tokens(encoder, plate, [2], progress=False)[2]
    np.testing.assert_allclose(patches.mean(axis=(1, 2)), crop, atol=1e-5)


def test_channel_agnostic_tokens(plate):
    encoder = tiny_encoder(channel_agnostic=True)
    crop = image_embed.extract_crop_tokens(encoder, plate, [2], batch_size=4, progress=False)[2]
    manual = manual_patch_tokens(encoder, np.asarray(plate), 2)  # (n, 3 * 16, D)
    np.testing.assert_allclose(crop, manual.mean(axis=1), atol=2e-5)
    patches = image_embed.extract_patch_tokens(encoder, plate, 2, progress=False)
    per_position = manual.reshape(11, 3, 16, 32).mean(axis=1).reshape(11, 4, 4, 32)
    np.testing.assert_allclose(patches, per_position, atol=2e-5)
    np.testing.assert_allclose(patches.mean(axis=(1, 2)), crop, atol=1e-5)


def test_layers_and_input_checks(plate):
    encoder = tiny_encoder()
    assert image_embed.available_layers(encoder) == [1, 2, 3]
    with pytest.raises(ValueError, match=r"valid layers are 1\.\.3"):
        image_embed.extract_crop_tokens(encoder, plate, [4], progress=False)
    with pytest.raises(ValueError, match=r"valid layers are 1\.\.3"):
        image_embed.extract_patch_tokens(encoder, plate, 0, progress=False)
    with pytest.raises(ValueError, match=r"2 channels but the model expects 3"):
        image_embed.extract_crop_tokens(encoder, plate[:, :2], [1], progress=False)
    with pytest.raises(ValueError, match=r"8x8 pixels but the model expects 16x16"):
        image_embed.extract_crop_tokens(encoder, plate[:, :, :8, :8], [1], progress=False)
