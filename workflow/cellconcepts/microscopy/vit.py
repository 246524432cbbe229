"""A plain-torch Vision Transformer encoder whose parameter names follow timm's layout.

Same names as timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2``, ``norm``), so timm-format
weights load with :func:`~cellconcepts.microscopy.checkpoints.load_encoder` without timm
installed. Also covered: timm's ``ParallelScalingBlock`` (``block="parallel"``, or
``"parallel_legacy"`` for weights trained before timm fixed its bias routing, such as
OpenPhenom), LayerScale (``init_values``), no final norm (``final_norm=False``, timm with
``global_pool="avg"``) and the channel-agnostic patch embedding of OpenPhenom's CA-MAE (one
shared 1-channel projection, spatial sin-cos position embedding repeated per channel, tokens
ordered channel-major). Checkpoints are read and written by
:mod:`cellconcepts.microscopy.checkpoints`.

Layer indexing: layer ``l`` in ``1..depth`` is the output of block ``l`` (the residual stream
after that block, before the final norm). Inputs to :meth:`ViTEncoder.forward` are float
images already normalised the way the model was trained (:meth:`ViTEncoder.normalize`, by
``ViTConfig.input_norm``).
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellconcepts.defaults import schema_default

BLOCK_TYPES = ("standard", "parallel", "parallel_legacy")
LN_EPS = 1e-6  # timm's ViT LayerNorm epsilon
# How images are normalised before the encoder (ViTConfig.input_norm): "standardize" is the
# workflow's own MAE's; "instance_norm" is OpenPhenom's predict() (maes_microscopy's Normalizer:
# pixels / 255 whatever their dtype, then torch's InstanceNorm2d without affine or running
# statistics); "instance_norm_fullscale" divides by the dtype's full scale instead (255 for
# 8-bit, 65535 for 16-bit, floats as they are) before the same InstanceNorm2d: not the
# reference's on 16-bit or float images (docs/openphenom.md), and what "instance_norm" meant
# in a directory saved before checkpoints.INPUT_NORM_REVISION.
INPUT_NORMS = ("standardize", "instance_norm", "instance_norm_fullscale")
REFERENCE_PIXEL_SCALE = 255.0  # maes_microscopy's Normalizer: pixels.float() / 255.0
# What the schema's input_norm null stands for: the normalisation of the MAE trained here.
SELF_TRAINED_INPUT_NORM = "standardize"
STANDARDIZE_EPS = 1e-6
INSTANCE_NORM_EPS = 1e-5  # torch.nn.InstanceNorm2d's default
_KEY = "datasets.*.microscopy.model.architecture"


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a :class:`ViTEncoder`.

    The first eleven fields are the demo/timm essentials. The rest describe timm variants:
    ``init_values`` (LayerScale; ``None`` = none), ``block`` ("standard" pre-norm block,
    timm's "parallel" scaling block, or "parallel_legacy", the same with timm's old bias
    routing, see :class:`ParallelBlock`), ``final_norm``, and for channel-agnostic models whether a
    learned ``channel_embed`` is added (OpenPhenom has none) and ``max_in_chans``, the number of
    channels the position embedding covers (``None`` = ``in_chans``). ``input_norm`` says how
    the model's input images are normalised (:func:`normalize_images`: "standardize",
    "instance_norm" as OpenPhenom's ``predict()``, or "instance_norm_fullscale"). OpenPhenom's
    ViT-S/16 is ``openphenom_config()``.

    Every default is the config schema's (``datasets.<name>.microscopy.model.architecture``),
    read by :func:`~cellconcepts.defaults.schema_default`. ``input_norm=None`` (the schema's
    default) means "standardize", the normalisation of the MAE trained here, and is resolved to
    it on construction: ``config.input_norm`` is always a name, and a saved ``config.json`` carries
    it. Weights trained elsewhere must name theirs: the config check refuses a user checkpoint
    whose ``input_norm`` is null (``cellconcepts.config``), and a directory this workflow saved
    without the key predates it and was trained with "standardize".
    """

    img_size: int = schema_default(f"{_KEY}.img_size")
    patch_size: int = schema_default(f"{_KEY}.patch_size")
    in_chans: int = schema_default(f"{_KEY}.in_chans")
    embed_dim: int = schema_default(f"{_KEY}.embed_dim")
    depth: int = schema_default(f"{_KEY}.depth")
    num_heads: int = schema_default(f"{_KEY}.num_heads")
    mlp_ratio: float = schema_default(f"{_KEY}.mlp_ratio")
    qkv_bias: bool = schema_default(f"{_KEY}.qkv_bias")
    qk_norm: bool = schema_default(f"{_KEY}.qk_norm")
    class_token: bool = schema_default(f"{_KEY}.class_token")
    channel_agnostic: bool = schema_default(f"{_KEY}.channel_agnostic")
    init_values: float | None = schema_default(f"{_KEY}.init_values")
    block: str = schema_default(f"{_KEY}.block")
    final_norm: bool = schema_default(f"{_KEY}.final_norm")
    channel_embed: bool = schema_default(f"{_KEY}.channel_embed")
    max_in_chans: int | None = schema_default(f"{_KEY}.max_in_chans")
    input_norm: str | None = schema_default(f"{_KEY}.input_norm")

    def __post_init__(self) -> None:
        if self.input_norm is None:
            # The schema's null: the normalisation of the MAE trained here, stored resolved so
            # that a saved config.json names it.
            object.__setattr__(self, "input_norm", SELF_TRAINED_INPUT_NORM)
        positive = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ViTConfig.{name}: expected a positive integer, got {value!r}")
        if self.img_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: img_size {self.img_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"ViTConfig: embed_dim {self.embed_dim} is not divisible by "
                f"num_heads {self.num_heads}"
            )
        if self.embed_dim % 4:
            raise ValueError(
                f"ViTConfig.embed_dim: {self.embed_dim} must be a multiple of 4 for the 2-D "
                "sin-cos position embedding"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"ViTConfig.mlp_ratio: expected > 0, got {self.mlp_ratio!r}")
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"ViTConfig.block: expected one of {BLOCK_TYPES}, got {self.block!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(
                f"ViTConfig.input_norm: expected one of {INPUT_NORMS}, got {self.input_norm!r}"
            )
        if self.max_in_chans is not None and self.max_in_chans < self.in_chans:
            raise ValueError(
                f"ViTConfig.max_in_chans: {self.max_in_chans} is smaller than "
                f"in_chans {self.in_chans}"
            )

    @property
    def pos_channels(self) -> int:
        """Channels the (channel-agnostic) position embedding and channel embedding cover."""
        return self.max_in_chans if self.max_in_chans is not None else self.in_chans

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ViTConfig:
        """Build from a mapping; unknown keys are an error that names them, missing ones take
        the schema's defaults (``input_norm`` missing or None: "standardize")."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"ViTConfig: unknown keys {unknown}; valid keys are {sorted(names)}")
        return cls(**dict(d))


def openphenom_config(**overrides: Any) -> ViTConfig:
    """The encoder of OpenPhenom (Recursion's public CA-MAE ViT-S/16 at 256 px, 11 channels)."""
    settings: dict[str, Any] = dict(
        img_size=256,
        patch_size=16,
        in_chans=6,
        embed_dim=384,
        depth=12,
        num_heads=6,
        mlp_ratio=4.0,
        qkv_bias=False,
        qk_norm=True,
        class_token=True,
        channel_agnostic=True,
        init_values=1e-4,
        block="parallel_legacy",  # trained with timm 0.9.7
        final_norm=False,
        channel_embed=False,
        max_in_chans=11,
        input_norm="instance_norm",
    )
    settings.update(overrides)
    return ViTConfig.from_dict(settings)


# --------------------------------------------------------------------------- preprocessing


def _as_float_images(images: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """(B, C, H, W) float32; numpy input (possibly memory-mapped) becomes a CPU tensor."""
    if isinstance(images, torch.Tensor):
        x = images.to(torch.float32)
    else:
        # A copy: memory-mapped input is read-only, and torch wants writable memory.
        x = torch.from_numpy(np.array(images, dtype=np.float32))
    if x.ndim != 4:
        raise ValueError(f"{name}: expected images (B, C, H, W), got {tuple(x.shape)}")
    return x


def self_standardize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The workflow's own MAE input: each channel of each image standardised on its raw values,
    ``(x - mean_HW) / (std_HW + 1e-6)`` with the population std (float32).

    Makes tokens independent of a plate's gain and offset. Not OpenPhenom's normalisation
    (:func:`instance_normalize`): on dim channels the two differ, and a near-blank channel's
    noise is blown up to unit variance here. A tensor stays on its device.
    """
    x = _as_float_images(images, "self_standardize")
    std, mean = torch.std_mean(x, dim=(2, 3), keepdim=True, correction=0)
    return (x - mean) / (std + STANDARDIZE_EPS)


def _full_scale(dtype: Any) -> float:
    """The value of a full-scale pixel: 255 (8-bit), 65535 (16-bit), 1 (floats)."""
    name = str(dtype).removeprefix("torch.")
    if name == "uint8":
        return 255.0
    if name == "uint16":
        return 65535.0
    if name.startswith(("float", "bfloat")):
        return 1.0
    raise ValueError(
        f"instance_normalize_fullscale: images of dtype {name}; expected 8-bit or 16-bit "
        "unsigned integers, or floats already scaled to [0, 1]"
    )


def _instance_norm(x: torch.Tensor) -> torch.Tensor:
    """torch's InstanceNorm2d without affine or running statistics: per image and channel
    ``(x - mean_HW) / sqrt(var_HW + 1e-5)`` with the biased variance."""
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    return (x - mean) / torch.sqrt(var + INSTANCE_NORM_EPS)


def instance_normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """OpenPhenom's input normalisation, as its ``predict()`` does it: pixels / 255 whatever
    their dtype (maes_microscopy's ``Normalizer``), then per image and channel
    ``(x - mean_HW) / sqrt(var_HW + 1e-5)`` with the biased variance (torch's InstanceNorm2d
    without affine or running statistics), float32.

    Only the epsilon makes the scale matter: a 16-bit image is divided by 255 too, so its
    channels are ~257 times larger than its 8-bit export's and the epsilon weighs less on them;
    floats are divided by 255 too (a store normalised per plate, median 1, then lets the
    epsilon dominate). :func:`instance_normalize_fullscale` is the alternative. A tensor stays
    on its device.
    """
    return _instance_norm(_as_float_images(images, "instance_normalize") / REFERENCE_PIXEL_SCALE)


def instance_normalize_fullscale(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The instance norm of :func:`instance_normalize` after dividing by the dtype's full
    scale, not by 255: 255 for 8-bit (the same as the reference), 65535 for 16-bit, and
    floats taken as already in [0, 1]. Not OpenPhenom's ``predict()`` on 16-bit or float
    images: the epsilon weighs on a 16-bit image as on its 8-bit export, which on dim channels
    moves the embeddings far from the reference's (docs/openphenom.md). What "instance_norm"
    meant before :data:`~cellconcepts.microscopy.checkpoints.INPUT_NORM_REVISION`. A tensor
    stays on its device.
    """
    x = _as_float_images(images, "instance_normalize_fullscale") / _full_scale(images.dtype)
    return _instance_norm(x)


def check_finite_pixels(images: np.ndarray, rows: np.ndarray | range, where: str) -> None:
    """Raw images must be finite: a NaN pixel would otherwise surface later as a NaN loss or
    token (and used to be reported as a learning-rate problem). Names the first bad image."""
    if np.issubdtype(images.dtype, np.floating):
        finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
        if not finite.all():
            first = int(np.flatnonzero(~finite)[0])
            raise ValueError(
                f"{where}: image {list(rows)[first]} holds NaN or infinite pixels; expected "
                "finite intensities"
            )


def normalize_images(images: np.ndarray | torch.Tensor, method: str) -> torch.Tensor:
    """Images as the encoder expects them: ``method`` is a ``ViTConfig.input_norm``."""
    if method == "standardize":
        return self_standardize(images)
    if method == "instance_norm":
        return instance_normalize(images)
    if method == "instance_norm_fullscale":
        return instance_normalize_fullscale(images)
    raise ValueError(f"input_norm: expected one of {INPUT_NORMS}, got {method!r}")


def sincos_pos_embed_2d(embed_dim: int, grid: int, n_prefix: int, repeats: int = 1) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (1, n_prefix + repeats*grid*grid, D).

    Per position ``[sin(h w_k), cos(h w_k), sin(w w_k), cos(w w_k)]`` with
    ``w_k = 10000^(-k/(D/4))``, positions row-major; zeros for the prefix (CLS) token; the
    spatial block is repeated ``repeats`` times (channel-agnostic tokens).
    """
    positions = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(positions, positions, indexing="ij")
    quarter = embed_dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    h = torch.outer(rows.flatten(), omega)
    w = torch.outer(cols.flatten(), omega)
    spatial = torch.cat([h.sin(), h.cos(), w.sin(), w.cos()], dim=1).repeat(repeats, 1)
    prefix = torch.zeros(n_prefix, embed_dim, dtype=torch.float64)
    return torch.cat([prefix, spatial], dim=0).unsqueeze(0).to(torch.float32)


# --------------------------------------------------------------------------- modules


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (timm name: ``gamma``)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _layer_scale(dim: int, init_values: float | None) -> nn.Module:
    return LayerScale(dim, init_values) if init_values is not None else nn.Identity()


class Attention(nn.Module):
    """Multi-head self-attention with timm names (``qkv``, ``q_norm``, ``k_norm``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer GELU MLP (timm names ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm)
        self.ls1 = _layer_scale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = _layer_scale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ParallelBlock(nn.Module):
    """timm's ``ParallelScalingBlock``: attention and MLP in parallel from one input projection.

    ``in_proj`` yields ``[mlp hidden, q, k, v]``; without ``qkv_bias`` the MLP half has its own
    ``mlp_bias``; output ``x + ls(attn_out_proj(attn) + mlp_out_proj(gelu(mlp)))``. With
    ``legacy_bias`` the bias is routed as timm did before fixing its issue #2653 (2026): the
    vector ``[zeros(3 dim), mlp_bias]`` is added to the whole ``in_proj`` output, so parts of
    ``mlp_bias`` land on q, k and v. Weights trained that way (OpenPhenom, timm 0.9.7) need it.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        init_values: float | None = None,
        legacy_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.legacy_bias = legacy_bias
        hidden = int(dim * mlp_ratio)
        self.in_split = [hidden, dim, dim, dim]
        self.in_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.in_proj = nn.Linear(dim, hidden + 3 * dim, bias=qkv_bias)
        self.mlp_bias = None if qkv_bias else nn.Parameter(torch.zeros(hidden))
        self.q_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS) if qk_norm else nn.Identity()
        self.mlp_act = nn.GELU()
        self.attn_out_proj = nn.Linear(dim, dim)
        self.mlp_out_proj = nn.Linear(hidden, dim)
        self.ls = _layer_scale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        y = self.in_proj(self.in_norm(x))
        if self.mlp_bias is not None and self.legacy_bias:
            y = y + torch.cat([self.mlp_bias.new_zeros(3 * d), self.mlp_bias])
        x_mlp, q, k, v = torch.split(y, self.in_split, dim=-1)
        if self.mlp_bias is not None and not self.legacy_bias:
            x_mlp = x_mlp + self.mlp_bias
        q = self.q_norm(q.view(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        v = v.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        y = self.attn_out_proj(attn) + self.mlp_out_proj(self.mlp_act(x_mlp))
        return x + self.ls(y)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (timm name ``proj``); one shared 1-channel projection
    applied to every channel when channel-agnostic."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, channel_agnostic: bool):
        super().__init__()
        self.channel_agnostic = channel_agnostic
        conv_in = 1 if channel_agnostic else in_chans
        self.proj = nn.Conv2d(conv_in, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), or (B, C*N, D) channel-major when channel-agnostic."""
        if not self.channel_agnostic:
            return self.proj(x).flatten(2).transpose(1, 2)
        b, c, h, w = x.shape
        tokens = self.proj(x.reshape(b * c, 1, h, w)).flatten(2).transpose(1, 2)
        return tokens.reshape(b, c * tokens.shape[1], tokens.shape[2])


class ViTEncoder(nn.Module):
    """ViT encoder with timm parameter names; see the module docstring for layer indexing."""

    def __init__(self, config: ViTConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if config is None:
            config = ViTConfig()
        elif not isinstance(config, ViTConfig):
            config = ViTConfig.from_dict(config)
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(
            config.patch_size, config.in_chans, dim, config.channel_agnostic
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        repeats = config.pos_channels if config.channel_agnostic else 1
        pos = sincos_pos_embed_2d(dim, self.grid_size[0], self.n_prefix, repeats)
        self.pos_embed = nn.Parameter(pos, requires_grad=False)
        if config.channel_agnostic and config.channel_embed:
            self.channel_embed = nn.Parameter(torch.zeros(1, config.pos_channels, 1, dim))
        else:
            self.channel_embed = None
        block_args = dict(
            dim=dim,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            qk_norm=config.qk_norm,
            init_values=config.init_values,
        )
        if config.block == "standard":
            blocks = [Block(**block_args) for _ in range(config.depth)]
        else:
            legacy = config.block == "parallel_legacy"
            blocks = [ParallelBlock(**block_args, legacy_bias=legacy) for _ in range(config.depth)]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS) if config.final_norm else nn.Identity()
        self.reset_parameters()

    def normalize(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw images (B, C, H, W) normalised as this model's input (``config.input_norm``)."""
        return normalize_images(images, self.config.input_norm)

    def reset_parameters(self) -> None:
        """MAE initialisation: xavier-uniform linears and patch projection, zero biases,
        N(0, 0.02) class token and channel embedding (uses torch's global generator)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.data.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        if self.channel_embed is not None:
            nn.init.normal_(self.channel_embed, std=0.02)

    @property
    def n_prefix(self) -> int:
        """Number of prefix (CLS) tokens before the patch tokens: 1 or 0."""
        return 1 if self.config.class_token else 0

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (H / patch, W / patch)."""
        side = self.config.img_size // self.config.patch_size
        return side, side

    @property
    def n_patches(self) -> int:
        """Spatial patches per image (per channel for channel-agnostic models)."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def depth(self) -> int:
        """Number of blocks (valid layers are 1..depth)."""
        return len(self.blocks)

    @property
    def embed_dim(self) -> int:
        """Token dimension D."""
        return self.config.embed_dim

    def n_tokens(self, n_channels: int | None = None) -> int:
        """Patch tokens per image: n_patches, times the channels when channel-agnostic."""
        if not self.config.channel_agnostic:
            return self.n_patches
        return self.n_patches * (n_channels or self.config.in_chans)

    def check_images(self, shape: tuple[int, ...], where: str = "images") -> None:
        """Raise ValueError unless ``shape`` is (n, C, img_size, img_size) with C usable here."""
        cfg = self.config
        if len(shape) != 4:
            raise ValueError(f"{where}: expected images (n, C, H, W), got shape {tuple(shape)}")
        _, c, h, w = shape
        if (h, w) != (cfg.img_size, cfg.img_size):
            raise ValueError(
                f"{where}: images are {h}x{w} pixels but the model expects "
                f"{cfg.img_size}x{cfg.img_size} (ViTConfig.img_size)"
            )
        if cfg.channel_agnostic:
            if not 1 <= c <= cfg.pos_channels:
                raise ValueError(
                    f"{where}: {c} channels, but this channel-agnostic model takes 1.."
                    f"{cfg.pos_channels} (ViTConfig.max_in_chans / in_chans)"
                )
        elif c != cfg.in_chans:
            raise ValueError(
                f"{where}: images have {c} channels but the model expects {cfg.in_chans} "
                "(ViTConfig.in_chans)"
            )

    def patchify_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding plus position (and channel) embedding: (B, T, D), no prefix token."""
        self.check_images(tuple(x.shape), "ViTEncoder input")
        tokens = self.patch_embed(x)
        n_tokens = tokens.shape[1]
        tokens = tokens + self.pos_embed[:, self.n_prefix : self.n_prefix + n_tokens]
        if self.channel_embed is not None:
            b, c = x.shape[:2]
            per_channel = tokens.reshape(b, c, self.n_patches, -1) + self.channel_embed[:, :c]
            tokens = per_channel.reshape(b, n_tokens, -1)
        return tokens

    def forward(
        self,
        x: torch.Tensor,
        mask_keep_idx: torch.Tensor | None = None,
        *,
        max_layer: int | None = None,
    ) -> torch.Tensor:
        """Encode standardised images: (B, n_prefix + T_kept, D) after the final norm.

        ``mask_keep_idx`` (B, T_kept) selects the patch tokens to keep (MAE encoder). With
        ``max_layer`` only blocks 1..max_layer run and their output is returned without the
        final norm (saves time when only early layers are read through hooks).
        """
        tokens = self.patchify_tokens(x)
        if mask_keep_idx is not None:
            index = mask_keep_idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
            tokens = torch.gather(tokens, 1, index)
        if self.cls_token is not None:
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], dim=1)
        stop = self.depth if max_layer is None else _check_layer(max_layer, self.depth)
        for block in self.blocks[:stop]:
            tokens = block(tokens)
        return self.norm(tokens) if stop == self.depth else tokens


# --------------------------------------------------------------------------- layer hooks


def _check_layer(layer: Any, depth: int) -> int:
    try:
        value = operator.index(layer)
    except TypeError:
        raise ValueError(
            f"layer {layer!r} is not an integer; valid layers are 1..{depth} "
            "(layer l = output of block l)"
        ) from None
    if isinstance(layer, bool) or not 1 <= value <= depth:
        raise ValueError(
            f"layer {layer!r} is out of range; valid layers are 1..{depth} "
            "(layer l = output of block l)"
        )
    return value


def check_layers(model: ViTEncoder, layers: Iterable[int]) -> list[int]:
    """The requested layers as sorted distinct ints; ValueError naming the valid range."""
    depth = len(model.blocks)
    wanted = sorted({_check_layer(layer, depth) for layer in layers})
    if not wanted:
        raise ValueError(f"no layers requested; valid layers are 1..{depth}")
    return wanted


@contextlib.contextmanager
def capture_layers(model: ViTEncoder, layers: Iterable[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Record block outputs during forward passes: yields {layer: (B, tokens, D)}.

    The dict is refilled on every forward inside the block; hooks are removed on exit.
    """
    wanted = check_layers(model, layers)
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def hook_for(layer: int):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            captured[layer] = output

        return hook

    try:
        for layer in wanted:
            handles.append(model.blocks[layer - 1].register_forward_hook(hook_for(layer)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------- description


def describe_config(config: ViTConfig) -> str:
    """Short summary of an architecture for log lines."""
    return (
        f"D={config.embed_dim}, depth={config.depth}, patch={config.patch_size}, "
        f"img={config.img_size}, channel_agnostic={config.channel_agnostic}"
    )


def describe_encoder(encoder: ViTEncoder) -> str:
    """One line for logs: architecture and parameter count."""
    millions = sum(p.numel() for p in encoder.parameters()) / 1e6
    return f"ViT {describe_config(encoder.config)}, {millions:.2f}M parameters"
