"""MAE: masking, loss, augmentation, schedule, training, determinism and exact resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cellconcepts.microscopy import mae
from cellconcepts.microscopy.mae import MAE, MAEConfig, train_mae
from cellconcepts.microscopy.vit import ViTConfig

VIT = ViTConfig(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2)
DECODER = MAEConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2)
TRAIN = dict(steps=6, batch_size=8, lr=3e-3, warmup_steps=2, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def smooth_images(n: int, seed: int = 0) -> np.ndarray:
    """uint16 crops of random low-frequency waves (predictable from visible patches) + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16] / 16.0
    out = np.empty((n, 3, 16, 16))
    for i in range(n):
        fy, fx = rng.uniform(0.5, 2.0, 2)
        py, px = rng.uniform(0, 2 * np.pi, 2)
        wave = np.sin(2 * np.pi * fy * yy + py) + np.cos(2 * np.pi * fx * xx + px)
        for c in range(3):
            out[i, c] = 1000 + 300 * (c + 1) * wave + rng.normal(0, 20, (16, 16))
    return out.astype(np.uint16)


class CrashingImages:
    """An image array whose `fail_on`-th read raises, like a job killed mid-training."""

    def __init__(self, array: np.ndarray, fail_on: int) -> None:
        self.array, self.fail_on, self.reads = array, fail_on, 0
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, index):
        self.reads += 1
        if self.reads == self.fail_on:
            raise RuntimeError("simulated crash")
        return self.array[index]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert list(state_a) == list(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize("channel_agnostic", [False, True])
def test_masking_keeps_the_right_tokens(channel_agnostic):
    vit_config = ViTConfig(**{**VIT.to_dict(), "channel_agnostic": channel_agnostic})
    model = MAE(vit_config, DECODER)
    n_tokens = 16 * (3 if channel_agnostic else 1)
    assert model.n_tokens == n_tokens and model.n_keep == n_tokens // 4
    keep, mask, restore = model.random_masking(5, torch.Generator().manual_seed(0))
    assert keep.shape == (5, n_tokens // 4) and mask.shape == restore.shape == (5, n_tokens)
    np.testing.assert_array_equal(mask.sum(dim=1).numpy(), n_tokens - n_tokens // 4)
    for row in range(5):
        assert len(set(keep[row].tolist())) == n_tokens // 4
        assert mask[row, keep[row]].sum() == 0  # kept tokens are exactly the unmasked ones
    assert not torch.equal(keep[0], keep[1])  # a different shuffle per sample
    x = torch.randn(5, 3, 16, 16)
    latent = model.encoder(x, mask_keep_idx=keep)
    assert latent.shape == (5, 1 + n_tokens // 4, 32)
    loss, pred, mask = model(x, torch.Generator().manual_seed(0))
    assert pred.shape == (5, n_tokens, 16 * (1 if channel_agnostic else 3))
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("channel_agnostic", [False, True])
def test_loss_is_masked_mse_on_normalised_patches(channel_agnostic):
    vit_config = ViTConfig(**{**VIT.to_dict(), "channel_agnostic": channel_agnostic})
    torch.manual_seed(0)
    model = MAE(vit_config, DECODER)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        loss, pred, mask = model(x, torch.Generator().manual_seed(1))
    # Pixels of token (i, j) [channel c]: x[:, c, 4i:4i+4, 4j:4j+4], target laid out as patchify.
    target = np.empty(pred.shape)
    arr = x.numpy().astype(np.float64)
    for i in range(4):
        for j in range(4):
            block = arr[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]  # (B, C, p, p)
            if channel_agnostic:
                for c in range(3):
                    target[:, c * 16 + i * 4 + j] = block[:, c].reshape(2, 16)
            else:
                target[:, i * 4 + j] = block.transpose(0, 2, 3, 1).reshape(2, 48)
    np.testing.assert_allclose(model.patchify(x).numpy(), target, atol=1e-6)
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, ddof=1, keepdims=True)
    normalised = (target - mean) / np.sqrt(var + 1e-6)
    per_token = ((pred.numpy() - normalised) ** 2).mean(axis=-1)
    expected = (per_token * mask.numpy()).sum() / mask.numpy().sum()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_augmentation_is_a_symmetry_of_each_image():
    x = torch.arange(6 * 2 * 5 * 5, dtype=torch.float32).reshape(6, 2, 5, 5)
    out = mae.augment_dihedral(x, torch.Generator().manual_seed(0))
    seen = set()
    for i in range(6):
        candidates = [
            torch.rot90(x[i].flip(-1) if flip else x[i], k, dims=(-2, -1))
            for flip in (0, 1)
            for k in range(4)
        ]
        matches = [n for n, c in enumerate(candidates) if torch.equal(out[i], c)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 1


def test_lr_schedule_warmup_then_cosine():
    assert mae.lr_factor(0, 10, 2) == pytest.approx(0.5)
    assert mae.lr_factor(1, 10, 2) == pytest.approx(1.0)
    assert mae.lr_factor(2, 10, 2) == pytest.approx(1.0)
    assert mae.lr_factor(6, 10, 2) == pytest.approx(0.5)  # halfway through the cosine
    assert mae.lr_factor(9, 10, 0) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.9)))


# --------------------------------------------------------------------------- training


def test_loss_decreases():
    images = smooth_images(64)
    model, history = train_mae(
        images, VIT, DECODER, steps=40, batch_size=16, lr=3e-3, warmup_steps=5, seed=0
    )
    assert list(history.columns) == ["step", "loss", "lr", "seconds"]
    assert history["step"].tolist() == list(range(40))
    assert history["lr"].iloc[4] == pytest.approx(3e-3)  # end of warmup
    assert history["lr"].iloc[-1] < 1e-4
    assert history["loss"].iloc[-5:].mean() < 0.8 * history["loss"].iloc[:5].mean()
    assert not model.training


def test_training_is_deterministic_for_a_seed():
    images = smooth_images(20)
    first, history = train_mae(images, VIT, DECODER, **TRAIN)
    second, again = train_mae(images, VIT, DECODER, **TRAIN)
    assert_same_weights(first, second)
    assert history["loss"].tolist() == again["loss"].tolist()
    other, _ = train_mae(images, VIT, DECODER, **{**TRAIN, "seed": 1})
    assert not torch.equal(
        other.encoder.blocks[0].attn.qkv.weight, first.encoder.blocks[0].attn.qkv.weight
    )


def test_resumed_run_equals_uninterrupted(tmp_path):
    images = smooth_images(20)
    straight, straight_history = train_mae(images, VIT, DECODER, **TRAIN)

    checkpoint = tmp_path / "mae.pt"
    # Read 1 fingerprints the data, read 2 + s loads step s: the crash hits step 4, after the
    # checkpoint written at step 4 (every 2 steps).
    crashing = CrashingImages(images, fail_on=2 + 4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mae(crashing, VIT, DECODER, **TRAIN, checkpoint_path=checkpoint, checkpoint_every=2)
    assert torch.load(checkpoint, weights_only=True)["step"] == 4

    resumed, history = train_mae(
        images, VIT, DECODER, **TRAIN, checkpoint_path=checkpoint, checkpoint_every=2
    )
    assert_same_weights(resumed, straight)
    assert history["step"].tolist() == list(range(6))
    assert history["loss"].tolist() == straight_history["loss"].tolist()
    assert history["lr"].tolist() == straight_history["lr"].tolist()

    # A finished checkpoint is returned as is.
    again, again_history = train_mae(images, VIT, DECODER, **TRAIN, checkpoint_path=checkpoint)
    assert_same_weights(again, straight)
    assert again_history["loss"].tolist() == straight_history["loss"].tolist()


def test_checkpoint_with_other_settings_starts_fresh(tmp_path, caplog):
    images = smooth_images(20)
    checkpoint = tmp_path / "mae.pt"
    train_mae(images, VIT, DECODER, **TRAIN, checkpoint_path=checkpoint)
    changed = {**TRAIN, "lr": 1e-3}
    with caplog.at_level(logging.WARNING, logger="cellconcepts.dictionary.checkpoint"):
        model, history = train_mae(images, VIT, DECODER, **changed, checkpoint_path=checkpoint)
    assert "other settings (lr)" in caplog.text
    fresh, fresh_history = train_mae(images, VIT, DECODER, **changed)
    assert_same_weights(model, fresh)
    assert history["loss"].tolist() == fresh_history["loss"].tolist()
    assert torch.load(checkpoint, weights_only=True)["step"] == 6  # rewritten by the new run


def test_training_input_errors():
    images = smooth_images(4)
    with pytest.raises(ValueError, match=r"expects \(n, 3, 16, 16\)"):
        train_mae(images[:, :2], VIT, DECODER, **TRAIN)
    with pytest.raises(ValueError, match="steps"):
        train_mae(images, VIT, DECODER, **{**TRAIN, "steps": 0})
    with pytest.raises(ValueError, match=r"lr: expected a number >= 0, got '1e-3' \(str\)"):
        train_mae(images, VIT, DECODER, **{**TRAIN, "lr": "1e-3"})
    with pytest.raises(ValueError, match=r"unknown keys \['ratio'\]"):
        train_mae(images, VIT, {"ratio": 0.5}, **TRAIN)
    with pytest.raises(ValueError, match="mask_ratio"):
        MAEConfig(mask_ratio=1.0)


def test_an_instance_norm_run_does_not_resume_a_checkpoint_from_before_the_reference_norm():
    """A training checkpoint's signature names the revision of "instance_norm" (which divided
    16-bit images by 65535 before it followed OpenPhenom's pixels / 255), so a run from before
    starts again; the signatures of the other normalisations are unchanged."""
    images = np.zeros((2, 3, 16, 16), dtype=np.uint16)
    settings = {"steps": 1}
    for norm in ("standardize", "instance_norm_fullscale"):
        vit_config = ViTConfig(input_norm=norm)
        signature = mae._signature(images, vit_config, DECODER, settings)
        assert signature["vit"] == vit_config.to_dict()
    vit_config = ViTConfig(input_norm="instance_norm")
    signature = mae._signature(images, vit_config, DECODER, settings)
    assert signature["vit"] == {**vit_config.to_dict(), "input_norm_revision": 2}
