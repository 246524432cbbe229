"""OpenPhenom embeddings equal the reference implementation's (Recursion's maes_microscopy).

The reference is rebuilt here in plain torch with its module tree and state-dict key names:
``MAEModel.input_norm`` (its ``Normalizer``, ``pixels.float() / 255`` whatever the dtype, then
``InstanceNorm2d`` without affine or running statistics), ``encoder.vit_backbone``, a timm 0.9.7
``VisionTransformer`` made channel-agnostic (one shared 1-channel patch projection,
channel-major tokens, fixed sin-cos position embedding over ``max_in_chans``) with
``ParallelScalingBlock``s (qk-norm, LayerScale, and the fused input bias
``cat(qkv_bias zeros, mlp_bias)`` that timm 0.9.7 added in the wrong order), no final norm, and
``predict()``: the mean of the last block's tokens without CLS. It is saved the way the
reference saves it (a torch pickle ``{"state_dict": ...}`` named ``model.safetensors`` beside an
HF ``config.json``) and loaded through the workflow's own loader.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from testkit import REPO
from torch import nn

from cellconcepts.microscopy.extract import extract_crop_tokens, load_image_encoder

IMG, PATCH, CHANNELS, MAX_CHANNELS, DIM, DEPTH, HEADS = 32, 8, 3, 5, 32, 2, 4
ARCHITECTURE = {
    "img_size": IMG,
    "patch_size": PATCH,
    "in_chans": CHANNELS,
    "embed_dim": DIM,
    "depth": DEPTH,
    "num_heads": HEADS,
    "mlp_ratio": 4.0,
    "qkv_bias": False,
    "qk_norm": True,
    "class_token": True,
    "channel_agnostic": True,
    "init_values": 1e-4,
    "block": "parallel_legacy",
    "final_norm": False,
    "channel_embed": False,
    "max_in_chans": MAX_CHANNELS,
    "input_norm": "instance_norm",
}


class ReferenceLayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-4))


class ReferenceParallelScalingBlock(nn.Module):
    """timm 0.9.7's ParallelScalingBlock with qkv_bias=False, qk_norm=True, LayerScale."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        hidden = 4 * dim
        self.in_split = [hidden, dim, dim, dim]
        self.in_norm = nn.LayerNorm(dim, eps=1e-6)
        self.in_proj = nn.Linear(dim, hidden + 3 * dim, bias=False)
        self.register_buffer("qkv_bias", torch.zeros(3 * dim), persistent=False)
        self.mlp_bias = nn.Parameter(torch.zeros(hidden))
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.attn_out_proj = nn.Linear(dim, dim)
        self.mlp_act = nn.GELU()
        self.mlp_out_proj = nn.Linear(hidden, dim)
        self.ls = ReferenceLayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        y = F.linear(
            self.in_norm(x), self.in_proj.weight, torch.cat((self.qkv_bias, self.mlp_bias))
        )
        x_mlp, q, k, v = torch.split(y, self.in_split, dim=-1)
        q = self.q_norm(q.view(b, n, self.heads, self.head_dim).transpose(1, 2))
        k = self.k_norm(k.view(b, n, self.heads, self.head_dim).transpose(1, 2))
        v = v.view(b, n, self.heads, self.head_dim).transpose(1, 2)
        attn = ((q / math.sqrt(self.head_dim)) @ k.transpose(-2, -1)).softmax(dim=-1)
        x_attn = self.attn_out_proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        x_mlp = self.mlp_out_proj(self.mlp_act(x_mlp))
        return x + (x_attn + x_mlp) * self.ls.gamma


class ReferencePatchEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, DIM, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.stack([self.proj(x[:, i : i + 1]) for i in range(x.shape[1])], dim=2)
        return x.flatten(2).transpose(1, 2)


def reference_sincos(length: int, modalities: int) -> torch.Tensor:
    """maes_microscopy's generate_2d_sincos_pos_embeddings, in float32 as there."""
    positions = torch.arange(length, dtype=torch.float32)
    h, w = torch.meshgrid(positions, positions, indexing="ij")
    quarter = DIM // 4
    weights = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    hw, ww = torch.outer(h.flatten(), weights), torch.outer(w.flatten(), weights)
    encoding = torch.cat([hw.sin(), hw.cos(), ww.sin(), ww.cos()], dim=1)[None]
    encoding = encoding.repeat(1, modalities, 1)
    return torch.cat([torch.zeros(1, 1, DIM), encoding], dim=1)


class ReferenceBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = ReferencePatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(reference_sincos(IMG // PATCH, MAX_CHANNELS), False)
        self.blocks = nn.Sequential(
            *[ReferenceParallelScalingBlock(DIM, HEADS) for _ in range(DEPTH)]
        )
        self.norm = nn.Identity()  # timm with global_pool="avg": the norm becomes fc_norm
        self.fc_norm = nn.LayerNorm(DIM, eps=1e-6)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        return self.norm(self.blocks(x))


class ReferenceEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vit_backbone = ReferenceBackbone()


class ReferenceMAE(nn.Module):
    """The parts of maes_microscopy's MAEModel that predict() and the state dict use."""

    def __init__(self) -> None:
        super().__init__()
        self.input_norm = nn.InstanceNorm2d(CHANNELS, affine=False, track_running_stats=False)
        self.encoder = ReferenceEncoder()
        self.encoder_decoder_proj = nn.Linear(DIM, 16)
        self.decoder = nn.Module()
        self.decoder.mask_token = nn.Parameter(torch.zeros(1, 1, 16))
        self.decoder_pred = nn.Linear(16, PATCH * PATCH)

    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(pixels.float() / 255.0)  # Normalizer, then InstanceNorm2d
        return self.encoder.vit_backbone.forward_features(x)[:, 1:, :].mean(dim=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[ReferenceMAE, Path]:
    """A reference model with random weights (LayerScale, biases and the MLP bias included,
    so that every part of the routing matters), saved as the reference saves it."""
    torch.manual_seed(0)
    model = ReferenceMAE().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("pos_embed"):
                continue
            param.copy_(torch.randn_like(param) * (0.5 if "gamma" not in name else 0.3))
    folder = tmp_path_factory.mktemp("phenom")
    torch.save({"state_dict": model.state_dict()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "MAE"}))
    return model, folder


def crops() -> np.ndarray:
    """8-bit crops with a bright, a dim (std ~2 grey levels) and a near-blank (std ~0.7)
    channel, in different orders."""
    rng = np.random.default_rng(1)
    bright = np.clip(rng.normal(120, 40, (IMG, IMG)), 0, 255)
    dim = np.clip(rng.normal(6, 2, (IMG, IMG)), 0, 255)
    blank = rng.poisson(0.5, (IMG, IMG))
    images = np.stack(
        [
            np.stack([bright, dim, blank]),
            np.stack([dim, blank, bright]),
            np.stack([blank, dim, dim + 3]),
        ]
    )
    return np.round(images).astype(np.uint8)


# 16-bit crops (camera counts): (mean, std) of every channel.
CROPS_16BIT = {
    "bright": (20000.0, 6000.0),
    "dim": (400.0, 60.0),  # background and little stain
    "very_dim": (110.0, 8.0),  # near the camera offset
}


def crops_16bit(kind: str) -> np.ndarray:
    """uint16 crops of one brightness, each channel with its own mean around the kind's."""
    mean, std = CROPS_16BIT[kind]
    rng = np.random.default_rng(2)
    means = mean * rng.uniform(0.7, 1.3, (4, CHANNELS, 1, 1))
    images = rng.normal(means, std, (4, CHANNELS, IMG, IMG))
    return np.clip(np.round(images), 0, 65535).astype(np.uint16)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _ours(folder: Path, images: np.ndarray | None = None, **overrides) -> np.ndarray:
    encoder = load_image_encoder(folder, {**ARCHITECTURE, **overrides}, "cpu")
    images = crops() if images is None else images
    return extract_crop_tokens(encoder, images, [DEPTH], batch_size=2, progress=False)[DEPTH]


def _predict(model: ReferenceMAE, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.predict(torch.from_numpy(images)).numpy()


def test_embeddings_equal_the_reference_predict(reference):
    model, folder = reference
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(crops())).numpy()
    assert _relative(_ours(folder), expected) <= 1e-5


@pytest.mark.parametrize("kind", sorted(CROPS_16BIT))
def test_16bit_embeddings_equal_the_reference_predict(reference, kind):
    """16-bit crops go through the reference's pixels / 255 too: dividing by 65535 instead
    lets the epsilon dominate the variance of dim channels (embeddings off by up to 65%)."""
    model, folder = reference
    images = crops_16bit(kind)
    assert images.dtype == np.uint16
    assert _relative(_ours(folder, images), _predict(model, images)) <= 1e-5


@pytest.mark.parametrize(("kind", "at_least"), [("dim", 0.05), ("very_dim", 0.05)])
def test_fullscale_norm_is_not_the_reference_on_dim_16bit(reference, kind, at_least):
    """The named alternative `instance_norm_fullscale` (/ 65535 for 16-bit) is documented as
    differing from the reference on dim 16-bit images, and equal on 8-bit ones."""
    model, folder = reference
    images = crops_16bit(kind)
    fullscale = _ours(folder, images, input_norm="instance_norm_fullscale")
    assert _relative(fullscale, _predict(model, images)) > at_least
    fullscale_8bit = _ours(folder, input_norm="instance_norm_fullscale")
    assert _relative(fullscale_8bit, _predict(model, crops())) <= 1e-5


def test_the_demo_standardisation_would_differ_on_dim_channels(reference):
    """Pins the normalisation: the workflow's own per-image standardisation on raw values is
    not OpenPhenom's; on dim and near-blank 8-bit channels the embeddings move."""
    model, folder = reference
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(crops())).numpy()
    assert _relative(_ours(folder, input_norm="standardize"), expected) > 1e-3


def test_block_routing_is_pinned(reference):
    """`parallel` and `parallel_legacy` load the same keys; only the legacy bias routing gives
    the reference's embedding."""
    model, folder = reference
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(crops())).numpy()
    assert _relative(_ours(folder, block="parallel"), expected) > 1e-2


def test_check_script_compares_with_stored_reference_embeddings(reference, tmp_path):
    """scripts/check_openphenom.py, as a reviewer runs it with the real checkpoint."""
    model, folder = reference
    np.save(tmp_path / "crops.npy", crops())
    with torch.no_grad():
        np.save(tmp_path / "reference.npy", model.predict(torch.from_numpy(crops())).numpy())
    config = {"datasets": {"screen": {"kind": "microscopy", "microscopy": {"model": {}}}}}
    config["datasets"]["screen"]["microscopy"]["model"]["architecture"] = ARCHITECTURE
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable,
        str(REPO / "scripts" / "check_openphenom.py"),
        str(folder),
        str(tmp_path / "crops.npy"),
        str(tmp_path / "reference.npy"),
        "--config",
        str(tmp_path / "config.yaml"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "largest relative difference" in result.stdout
    config["datasets"]["screen"]["microscopy"]["model"]["architecture"] = {
        **ARCHITECTURE,
        "block": "parallel",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 1


# A stand-in for the reference code of the Hugging Face checkout (huggingface_mae.py): the
# rebuilt reference above behind MAEConfig / MAEModel, whose from_pretrained calls torch.load on
# the path of model.safetensors as the reference's does.
HUGGINGFACE_MAE = """
import json
import sys

import torch

sys.path[:0] = [{tests!r}, {support!r}]
from test_openphenom_reference import ReferenceMAE


class MAEConfig:
    @classmethod
    def from_pretrained(cls, path):
        json.loads(open(f"{{path}}/config.json").read())
        return cls()


class MAEModel(ReferenceMAE):
    def __init__(self, config):
        super().__init__()

    @classmethod
    def from_pretrained(cls, path):
        model = cls(MAEConfig.from_pretrained(path))
        state = torch.load(f"{{path}}/model.safetensors", map_location="cpu")
        model.load_state_dict(state["state_dict"])
        return model
"""


def _recipe() -> str:
    """The reference side of scripts/check_openphenom.py's docstring, as written there."""
    text = (REPO / "scripts" / "check_openphenom.py").read_text()
    doc = text.split('"""')[1]
    block = doc.split("and crops.npy:\n\n", 1)[1].split("\n\nthen, in this project's", 1)[0]
    return textwrap.dedent(block)


def test_check_script_recipe_runs_as_written_on_16bit_crops(reference, tmp_path):
    """The docstring's reference recipe runs as written on the installed torch (whose
    torch.load hands a path ending in .safetensors to safetensors, so the reference's own
    from_pretrained fails on OpenPhenom's pickle), and the check passes on uint16 crops."""
    model, folder = reference
    checkout = tmp_path / "models" / "OpenPhenom"
    checkout.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        (checkout / name).write_bytes((folder / name).read_bytes())
    (checkout / "huggingface_mae.py").write_text(
        HUGGINGFACE_MAE.format(
            tests=str(REPO / "tests" / "microscopy"), support=str(REPO / "tests" / "support")
        )
    )
    images = crops_16bit("dim")
    np.save(tmp_path / "crops.npy", images)
    (tmp_path / "recipe.py").write_text(_recipe())
    run = subprocess.run(
        [sys.executable, "recipe.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "reference.npy"), _predict(model, images))

    config = {"datasets": {"screen": {"kind": "microscopy", "microscopy": {"model": {}}}}}
    config["datasets"]["screen"]["microscopy"]["model"]["architecture"] = ARCHITECTURE
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    script = str(REPO / "scripts" / "check_openphenom.py")
    args = ["models/OpenPhenom", "crops.npy", "reference.npy", "--config", "config.yaml"]
    check = subprocess.run(
        [sys.executable, script, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "(instance_norm, parallel_legacy)" in check.stdout
