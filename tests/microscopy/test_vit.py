"""ViT encoder: layer hooks, self-standardisation, blocks against explicit formulas, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cellconcepts.microscopy import checkpoints, vit
from cellconcepts.microscopy.vit import ViTConfig, ViTEncoder

TINY = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=3, num_heads=2)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_encoder(seed: int = 0, **overrides) -> ViTEncoder:
    torch.manual_seed(seed)
    encoder = ViTEncoder(ViTConfig(**{**TINY, **overrides}))
    # Perturb everything (biases and norms start at 0/1) so that a wrongly loaded tensor shows.
    with torch.no_grad():
        for param in encoder.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return encoder.eval()


def images(n: int = 4, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, channels, 16, 16))).float()


def manual_layer(encoder: ViTEncoder, x: torch.Tensor, layer: int) -> torch.Tensor:
    tokens = encoder.patchify_tokens(x)
    cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(len(x), -1, -1)
    tokens = torch.cat([cls, tokens], dim=1)
    for block in encoder.blocks[:layer]:
        tokens = block(tokens)
    return tokens


# --------------------------------------------------------------------------- config


def test_config_round_trip_and_unknown_keys():
    config = ViTConfig(**TINY, qk_norm=True)
    assert ViTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown keys \['depht', 'heads'\]"):
        ViTConfig.from_dict({**TINY, "depht": 2, "heads": 4})
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        ViTConfig(img_size=30, patch_size=8)


# --------------------------------------------------------------------------- standardisation


def test_self_standardize_per_image_per_channel():
    rng = np.random.default_rng(1)
    raw = rng.integers(100, 60000, size=(3, 2, 8, 8)).astype(np.uint16)
    raw[1, 1] = raw[1, 1] // 7  # a channel with a different scale
    out = vit.self_standardize(raw)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 8, 8)
    as_float = raw.astype(np.float64)
    mean = as_float.mean(axis=(2, 3), keepdims=True)
    std = as_float.std(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(out.numpy(), (as_float - mean) / (std + 1e-6), atol=2e-5)
    np.testing.assert_allclose(out.numpy().mean(axis=(2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.numpy().std(axis=(2, 3)), 1.0, atol=1e-5)
    # A constant gain and offset per image and channel (another plate's exposure) cancels out.
    gain = rng.uniform(0.5, 4.0, size=(3, 2, 1, 1))
    offset = rng.uniform(-50, 500, size=(3, 2, 1, 1))
    rescaled = vit.self_standardize(as_float * gain + offset)
    np.testing.assert_allclose(rescaled.numpy(), out.numpy(), atol=1e-4)
    # Tensors are accepted too and give the same result.
    torch.testing.assert_close(vit.self_standardize(torch.from_numpy(as_float)), out)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        vit.self_standardize(raw[0])


# --------------------------------------------------------------------------- blocks


def test_block_matches_explicit_attention_formula():
    torch.manual_seed(0)
    block = vit.Block(8, num_heads=2, qkv_bias=True, qk_norm=True, init_values=0.5)
    with torch.no_grad():
        for param in block.parameters():
            param.add_(0.1 * torch.randn_like(param))
    x = torch.randn(2, 5, 8)
    w = {name: p.detach() for name, p in block.named_parameters()}

    def ln(t, prefix):
        return F.layer_norm(t, t.shape[-1:], w[f"{prefix}.weight"], w[f"{prefix}.bias"], 1e-6)

    h = ln(x, "norm1")
    qkv = h @ w["attn.qkv.weight"].T + w["attn.qkv.bias"]  # [q | k | v], heads contiguous
    q, k, v = (qkv[..., i * 8 : (i + 1) * 8].reshape(2, 5, 2, 4).transpose(1, 2) for i in range(3))
    q, k = ln(q, "attn.q_norm"), ln(k, "attn.k_norm")
    attn = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    attn = attn.transpose(1, 2).reshape(2, 5, 8) @ w["attn.proj.weight"].T + w["attn.proj.bias"]
    y = x + w["ls1.gamma"] * attn
    hidden = F.gelu(ln(y, "norm2") @ w["mlp.fc1.weight"].T + w["mlp.fc1.bias"])
    expected = y + w["ls2.gamma"] * (hidden @ w["mlp.fc2.weight"].T + w["mlp.fc2.bias"])
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("legacy", [False, True])
def test_parallel_block_matches_timm_parallel_scaling_formula(legacy):
    torch.manual_seed(0)
    block = vit.ParallelBlock(
        8, num_heads=2, mlp_ratio=2.0, qkv_bias=False, qk_norm=True, init_values=0.3,
        legacy_bias=legacy,
    )  # fmt: skip
    with torch.no_grad():
        for param in block.parameters():
            param.add_(0.1 * torch.randn_like(param))
    assert block.in_proj.bias is None and block.mlp_bias.shape == (16,)
    x = torch.randn(2, 5, 8)
    w = {name: p.detach() for name, p in block.named_parameters()}

    def ln(t, prefix):
        return F.layer_norm(t, t.shape[-1:], w[f"{prefix}.weight"], w[f"{prefix}.bias"], 1e-6)

    y = ln(x, "in_norm") @ w["in_proj.weight"].T  # columns: [mlp hidden (16) | q | k | v]
    if legacy:  # timm 0.9: F.linear(y, W, cat(qkv_bias zeros (24), mlp_bias (16)))
        y = y + torch.cat([torch.zeros(24), w["mlp_bias"]])
    else:
        y = torch.cat([y[..., :16] + w["mlp_bias"], y[..., 16:]], dim=-1)
    mlp = y[..., :16]
    q, k, v = (
        y[..., 16 + 8 * i : 24 + 8 * i].reshape(2, 5, 2, 4).transpose(1, 2) for i in range(3)
    )
    q, k = ln(q, "q_norm"), ln(k, "k_norm")
    attn = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    attn = attn.transpose(1, 2).reshape(2, 5, 8)
    out = attn @ w["attn_out_proj.weight"].T + w["attn_out_proj.bias"]
    out = out + F.gelu(mlp) @ w["mlp_out_proj.weight"].T + w["mlp_out_proj.bias"]
    torch.testing.assert_close(block(x), x + w["ls.gamma"] * out, atol=1e-5, rtol=1e-5)


def test_patch_embedding_and_positions():
    encoder = ViTEncoder(ViTConfig(**TINY)).eval()
    x = images(2)
    tokens = encoder.patchify_tokens(x)
    assert tokens.shape == (2, 16, 32)
    # Token (i, j) of the 4x4 grid is the projection of pixels [4i:4i+4, 4j:4j+4].
    weight = encoder.patch_embed.proj.weight.detach().reshape(32, -1)
    patch = x[:, :, 4:8, 8:12].reshape(2, -1)
    expected = (
        patch @ weight.T + encoder.patch_embed.proj.bias + encoder.pos_embed[0, 1 + 1 * 4 + 2]
    )
    torch.testing.assert_close(tokens[:, 6], expected, atol=1e-5, rtol=1e-5)
    assert not encoder.pos_embed.requires_grad
    np.testing.assert_array_equal(encoder.pos_embed[0, 0].numpy(), 0.0)
    assert len({tuple(row.tolist()) for row in encoder.pos_embed[0, 1:]}) == 16


# --------------------------------------------------------------------------- hooks


def test_capture_layers_returns_block_outputs():
    encoder = tiny_encoder()
    x = images(3)
    with torch.no_grad(), vit.capture_layers(encoder, [3, 1]) as captured:
        final = encoder(x)
        assert sorted(captured) == [1, 3]
        for layer in (1, 3):
            assert captured[layer].shape == (3, 17, 32)
            torch.testing.assert_close(captured[layer], manual_layer(encoder, x, layer))
        torch.testing.assert_close(final, encoder.norm(captured[3]))
    assert all(not block._forward_hooks for block in encoder.blocks)
    with torch.no_grad():
        early = encoder(x, max_layer=2)
    torch.testing.assert_close(early, manual_layer(encoder, x, 2))


@pytest.mark.parametrize("layer", [0, 4, -1, "2", 1.5])
def test_capture_layers_rejects_invalid_layer(layer):
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match=r"valid layers are 1\.\.3"):
        with vit.capture_layers(encoder, [1, layer]):
            pass
    assert all(not block._forward_hooks for block in encoder.blocks)


def test_masked_forward_keeps_selected_tokens():
    encoder = tiny_encoder()
    x = images(2)
    keep = torch.tensor([[0, 5, 9], [15, 2, 3]])
    with torch.no_grad():
        out = encoder(x, mask_keep_idx=keep)
        tokens = encoder.patchify_tokens(x)
        cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(2, -1, -1)
        manual = torch.cat([cls, tokens[torch.arange(2)[:, None], keep]], dim=1)
        for block in encoder.blocks:
            manual = block(manual)
    assert out.shape == (2, 4, 32)
    torch.testing.assert_close(out, encoder.norm(manual))


# --------------------------------------------------------------------------- channel-agnostic


def test_channel_agnostic_shapes_and_tokens():
    encoder = tiny_encoder(channel_agnostic=True, max_in_chans=5)
    assert encoder.pos_embed.shape == (1, 1 + 5 * 16, 32)
    assert encoder.patch_embed.proj.weight.shape == (32, 1, 4, 4)
    x = images(2)
    with torch.no_grad():
        assert encoder(x).shape == (2, 1 + 3 * 16, 32)
        assert encoder(x[:, :2]).shape == (2, 1 + 2 * 16, 32)  # fewer channels also work
        tokens = encoder.patchify_tokens(x)
    # Token c*16 + n: channel c alone through the shared projection, plus position c*16 + n.
    weight = encoder.patch_embed.proj.weight.detach().reshape(32, -1)
    patch = x[:, 2, 4:8, 0:4].reshape(2, -1)
    expected = (
        patch @ weight.T
        + encoder.patch_embed.proj.bias
        + encoder.pos_embed[0, 1 + 2 * 16 + 4]
        + encoder.channel_embed[0, 2, 0]
    )
    torch.testing.assert_close(tokens[:, 2 * 16 + 4], expected.detach(), atol=1e-5, rtol=1e-5)
    # A fresh model codes only the spatial position: the same vector for every channel.
    fresh = ViTEncoder(ViTConfig(**TINY, channel_agnostic=True, max_in_chans=5)).pos_embed[0, 1:]
    torch.testing.assert_close(fresh.reshape(5, 16, 32), fresh[:16].expand(5, 16, 32))
    with pytest.raises(ValueError, match="takes 1..5"):
        encoder(images(1, channels=6))


# --------------------------------------------------------------------------- checkpoints


def test_save_pretrained_round_trip(tmp_path):
    encoder = tiny_encoder(qk_norm=True)
    target = tmp_path / "encoder"
    checkpoints.save_pretrained(encoder, target, extra_meta={"mae": {"steps": 3}})
    checkpoints.save_pretrained(
        encoder, target, extra_meta={"mae": {"steps": 3}}
    )  # replaces in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((target / "config.json").read_text())
    assert meta["model_type"] == "cellconcepts-vit" and meta["mae"] == {"steps": 3}
    assert meta["depth"] == 3 and meta["qk_norm"] is True
    loaded = checkpoints.load_encoder(target)
    assert not loaded.training and loaded.config == encoder.config
    x = images(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), encoder(x))
    with pytest.raises(ValueError, match="clash"):
        checkpoints.save_pretrained(encoder, target, extra_meta={"depth": 1})


def test_load_timm_layout_with_prefix_and_decoder_keys(tmp_path):
    encoder = tiny_encoder()
    state = {f"encoder.vit_backbone.{k}": v.clone() for k, v in encoder.state_dict().items()}
    state.update(
        {
            "encoder.vit_backbone.head.weight": torch.zeros(10, 32),
            "encoder.vit_backbone.fc_norm.weight": torch.ones(32),
            "encoder_decoder_proj.weight": torch.zeros(8, 32),
            "decoder.blocks.0.attn.qkv.weight": torch.zeros(24, 8),
            "decoder.mask_token": torch.zeros(1, 1, 8),
            "decoder_pred.weight": torch.zeros(48, 8),
        }
    )
    path = tmp_path / "openphenom_like.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = checkpoints.load_encoder(path, TINY)
    x = images(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), encoder(x))
    # A torch pickle behind a .safetensors name (as OpenPhenom publishes it), "module." prefix.
    pickled = tmp_path / "model.safetensors"
    torch.save({"model": {f"module.{k}": v for k, v in encoder.state_dict().items()}}, pickled)
    with torch.no_grad():
        assert torch.equal(checkpoints.load_encoder(pickled, ViTConfig(**TINY))(x), encoder(x))
    with pytest.raises(ValueError, match="needs the architecture"):
        checkpoints.load_encoder(path)


def test_load_openphenom_style_parallel_channel_agnostic(tmp_path):
    overrides = dict(
        block="parallel_legacy",
        qkv_bias=False,
        qk_norm=True,
        init_values=1e-4,
        final_norm=False,
        channel_agnostic=True,
        channel_embed=False,
        max_in_chans=5,
    )
    encoder = tiny_encoder(**overrides)
    keys = set(encoder.state_dict())
    assert "blocks.0.in_proj.weight" in keys and "blocks.0.ls.gamma" in keys
    assert not any(k.startswith(("norm.", "channel_embed")) for k in keys)
    state = {f"encoder.vit_backbone.{k}": v for k, v in encoder.state_dict().items()}
    state["encoder.vit_backbone.fc_norm.weight"] = torch.ones(32)
    state["decoder.modality_tokens.0"] = torch.zeros(1, 1, 8)
    path = tmp_path / "weights.safetensors"
    torch.save({"state_dict": state}, path)
    loaded = checkpoints.load_encoder(path, {**TINY, **overrides})
    x = images(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), encoder(x))


def test_channel_agnostic_round_trip(tmp_path):
    encoder = tiny_encoder(channel_agnostic=True)
    checkpoints.save_pretrained(encoder, tmp_path / "ca")
    loaded = checkpoints.load_encoder(tmp_path / "ca")
    assert loaded.config.channel_agnostic
    x = images(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), encoder(x))


def test_mismatched_weights_name_file_and_keys(tmp_path):
    deeper = tiny_encoder(depth=4)
    path = tmp_path / "deeper.pth"
    torch.save(deeper.state_dict(), path)
    with pytest.raises(ValueError) as err:
        checkpoints.load_encoder(path, TINY)
    message = str(err.value)
    assert "deeper.pth" in message and "unexpected keys" in message
    assert "blocks.3.attn.qkv.weight" in message and "missing keys" not in message

    wider = tiny_encoder(embed_dim=16)
    path = tmp_path / "wider.safetensors"
    import safetensors.torch

    safetensors.torch.save_file(wider.state_dict(), path)
    with pytest.raises(ValueError) as err:
        checkpoints.load_encoder(path, TINY)
    message = str(err.value)
    assert "wider.safetensors" in message and "shape mismatches" in message
    assert "patch_embed.proj.weight: file (16, 3, 4, 4) vs model (32, 3, 4, 4)" in message

    with pytest.raises(ValueError, match="missing keys"):
        checkpoints.load_encoder(path, {**TINY, "embed_dim": 16, "qk_norm": True})
    with pytest.raises(FileNotFoundError):
        checkpoints.load_encoder(tmp_path / "absent.pth", TINY)


def test_openphenom_config_has_the_published_layout():
    encoder = ViTEncoder(vit.openphenom_config(depth=1))  # one block keeps the test quick
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert shapes == {
        "cls_token": (1, 1, 384),
        "pos_embed": (1, 1 + 11 * 256, 384),  # 16x16 patches, repeated for 11 channels
        "patch_embed.proj.weight": (384, 1, 16, 16),
        "patch_embed.proj.bias": (384,),
        "blocks.0.mlp_bias": (1536,),
        "blocks.0.in_norm.weight": (384,),
        "blocks.0.in_norm.bias": (384,),
        "blocks.0.in_proj.weight": (1536 + 3 * 384, 384),
        "blocks.0.q_norm.weight": (64,),
        "blocks.0.q_norm.bias": (64,),
        "blocks.0.k_norm.weight": (64,),
        "blocks.0.k_norm.bias": (64,),
        "blocks.0.attn_out_proj.weight": (384, 384),
        "blocks.0.attn_out_proj.bias": (384,),
        "blocks.0.mlp_out_proj.weight": (384, 1536),
        "blocks.0.mlp_out_proj.bias": (384,),
        "blocks.0.ls.gamma": (384,),
    }


def _torch_instance_norm(raw: np.ndarray, scale: float) -> torch.Tensor:
    """pixels / scale, then torch's own InstanceNorm2d (biased variance, eps 1e-5)."""
    norm = torch.nn.InstanceNorm2d(raw.shape[1], affine=False, track_running_stats=False)
    return norm(torch.from_numpy(raw.astype(np.float32)).float() / scale)


def _raw(dtype, high: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, high, size=(2, 3, 8, 8)).astype(dtype)
    raw[0, 1] = 1 + (rng.random((8, 8)) < 0.3)  # a near-blank channel: values 1 and 2
    return raw


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_instance_normalize_is_openphenoms_input_norm(dtype):
    """OpenPhenom's predict(): pixels / 255 whatever the dtype (maes_microscopy's Normalizer),
    then torch's InstanceNorm2d."""
    raw = _raw(dtype)
    expected = _torch_instance_norm(raw, 255.0)
    torch.testing.assert_close(vit.instance_normalize(raw), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vit.normalize_images(raw, "instance_norm"), expected)
    torch.testing.assert_close(vit.instance_normalize(torch.from_numpy(raw)), expected)
    # A near-blank channel (std 0.45 grey levels) stays well below unit variance, where the
    # demo's standardisation blows its noise up to 1.
    assert float(vit.instance_normalize(raw)[0, 1].std()) < 0.6
    assert float(vit.self_standardize(raw)[0, 1].std()) > 0.99


@pytest.mark.parametrize(
    ("dtype", "scale"), [(np.uint8, 255.0), (np.uint16, 65535.0), (np.float32, 1.0)]
)
def test_instance_norm_fullscale_divides_by_the_dtypes_full_scale(dtype, scale):
    """The named alternative: the same InstanceNorm2d after dividing by the dtype's full scale;
    equal to the reference's on 8-bit images only."""
    raw = _raw(dtype)
    expected = _torch_instance_norm(raw, scale)
    torch.testing.assert_close(
        vit.normalize_images(raw, "instance_norm_fullscale"), expected, rtol=1e-5, atol=1e-5
    )
    reference = vit.instance_normalize(raw)
    if dtype is np.uint8:
        torch.testing.assert_close(vit.instance_normalize_fullscale(raw), reference)
    else:
        # On a near-blank 16-bit channel the epsilon dominates after / 65535, not after / 255.
        assert float((vit.instance_normalize_fullscale(raw) - reference).abs().max()) > 0.1
    with pytest.raises(ValueError, match="int32"):
        vit.instance_normalize_fullscale(np.zeros((1, 1, 4, 4), dtype=np.int32))


def test_dim_16bit_images_follow_the_reference():
    """A dim 16-bit channel (std ~3 counts): / 65535 lets the epsilon shrink its std to ~0.015;
    the reference's / 255 keeps it near 1, as instance_normalize does."""
    rng = np.random.default_rng(3)
    raw = np.clip(rng.normal(110, 3, (1, 2, 16, 16)), 0, None).astype(np.uint16)
    ours = vit.instance_normalize(raw)
    torch.testing.assert_close(ours, _torch_instance_norm(raw, 255.0), rtol=1e-5, atol=1e-5)
    assert float(ours.std()) > 0.9
    assert float(vit.instance_normalize_fullscale(raw).std()) < 0.1


def test_saved_directory_keeps_the_input_norm_it_was_trained_with(tmp_path):
    """A directory saved now names the revision of its input normalisation; one saved with
    "instance_norm" before "instance_norm" followed the reference for every dtype was trained
    with the full-scale division, and is read that way."""
    encoder = tiny_encoder(input_norm="instance_norm")
    checkpoints.save_pretrained(encoder, tmp_path / "now")
    meta = json.loads((tmp_path / "now" / "config.json").read_text())
    assert meta["input_norm"] == "instance_norm"
    assert meta[checkpoints.INPUT_NORM_REVISION_KEY] == checkpoints.INPUT_NORM_REVISION
    assert checkpoints.load_encoder(tmp_path / "now").config.input_norm == "instance_norm"

    checkpoints.save_pretrained(encoder, tmp_path / "before")
    config_path = tmp_path / "before" / "config.json"
    del meta[checkpoints.INPUT_NORM_REVISION_KEY]
    config_path.write_text(json.dumps(meta))
    assert (
        checkpoints.load_encoder(tmp_path / "before").config.input_norm == "instance_norm_fullscale"
    )
    for kept in ("standardize", "instance_norm_fullscale"):
        config_path.write_text(json.dumps({**meta, "input_norm": kept}))
        assert checkpoints.load_encoder(tmp_path / "before").config.input_norm == kept


def test_input_norm_is_part_of_the_architecture():
    assert vit.ViTConfig().input_norm == "standardize"
    assert vit.openphenom_config().input_norm == "instance_norm"
    assert vit.ViTConfig.from_dict({"input_norm": None}).input_norm == "standardize"
    # The schema's null is resolved on construction, so a saved config.json names it.
    assert vit.ViTConfig(input_norm=None).to_dict()["input_norm"] == "standardize"
    assert vit.ViTConfig(input_norm="instance_norm_fullscale").input_norm == (
        "instance_norm_fullscale"
    )
    with pytest.raises(ValueError, match="input_norm"):
        vit.ViTConfig(input_norm="zscore")
