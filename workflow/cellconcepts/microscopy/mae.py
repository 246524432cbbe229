"""Masked-autoencoder pre-training of the ViT encoder (He et al. 2022), resumable and seeded.

The MAE normalises each image as its encoder's ``input_norm`` says (the demo's: per-image,
per-channel standardisation, :func:`~cellconcepts.microscopy.vit.self_standardize`), hides a
random ``mask_ratio`` of the patch tokens, encodes the rest and reconstructs the hidden patches
with a light decoder; the loss is the MSE on the masked patches, against per-patch normalised
pixels (``norm_pix_loss``). Channel-agnostic encoders get one token per (channel, patch), and
each predicts its own patch x patch pixels.

Randomness of step ``s`` (which images, masks and flips/rotations) depends only on
``(seed, s)``, so a run resumed from a checkpoint continues bit-identically on CPU.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from cellconcepts.defaults import schema_default
from cellconcepts.dictionary.checkpoint import load_checkpoint, save_checkpoint
from cellconcepts.dictionary.sampling import BatchSampler
from cellconcepts.files import PathLike
from cellconcepts.microscopy.checkpoints import INPUT_NORM_REVISION, INPUT_NORM_REVISION_KEY
from cellconcepts.microscopy.vit import (
    LN_EPS,
    Block,
    ViTConfig,
    ViTEncoder,
    check_finite_pixels,
    describe_encoder,
    normalize_images,
    sincos_pos_embed_2d,
)

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("step", "loss", "lr", "seconds")
ADAM_BETAS = (0.9, 0.95)
NORM_PIX_EPS = 1e-6
# Parameters excluded from weight decay besides biases and norms (ndim < 2).
_NO_DECAY_NAMES = ("cls_token", "mask_token", "channel_embed")
_KEY = "datasets.*.microscopy.model.mae"


@dataclass(frozen=True)
class MAEConfig:
    """Decoder size and masking of the MAE (the encoder is described by ``ViTConfig``); every
    default is the config schema's (``datasets.<name>.microscopy.model.mae``)."""

    decoder_dim: int = schema_default(f"{_KEY}.decoder_dim")
    decoder_depth: int = schema_default(f"{_KEY}.decoder_depth")
    decoder_heads: int = schema_default(f"{_KEY}.decoder_heads")
    mask_ratio: float = schema_default(f"{_KEY}.mask_ratio")
    norm_pix_loss: bool = schema_default(f"{_KEY}.norm_pix_loss")

    def __post_init__(self) -> None:
        for name in ("decoder_dim", "decoder_depth", "decoder_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MAEConfig.{name}: expected a positive integer, got {value!r}")
        if self.decoder_dim % self.decoder_heads or self.decoder_dim % 4:
            raise ValueError(
                f"MAEConfig.decoder_dim: {self.decoder_dim} must be divisible by decoder_heads "
                f"({self.decoder_heads}) and by 4"
            )
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"MAEConfig.mask_ratio: expected 0 < ratio < 1, got {self.mask_ratio}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MAEConfig:
        """Build from a mapping; unknown keys are an error that names them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"MAEConfig: unknown keys {unknown}; valid keys are {sorted(names)}")
        return cls(**dict(d))


class MAE(nn.Module):
    """ViT encoder + light transformer decoder that reconstructs masked patches."""

    def __init__(
        self, vit_config: ViTConfig | Mapping[str, Any], mae_config: MAEConfig | None = None
    ) -> None:
        super().__init__()
        vit_config = _as_vit_config(vit_config)
        mae_config = mae_config if mae_config is not None else MAEConfig()
        self.mae_config = mae_config
        self.encoder = ViTEncoder(vit_config)
        enc = self.encoder
        dim = mae_config.decoder_dim
        channels = vit_config.in_chans
        self.n_tokens = enc.n_tokens(channels)
        self.n_keep = int(self.n_tokens * (1.0 - mae_config.mask_ratio))
        if not 1 <= self.n_keep < self.n_tokens:
            raise ValueError(
                f"MAEConfig.mask_ratio {mae_config.mask_ratio} keeps {self.n_keep} of "
                f"{self.n_tokens} tokens; at least one must be kept and one masked"
            )
        repeats = channels if vit_config.channel_agnostic else 1
        self.decoder_embed = nn.Linear(enc.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = sincos_pos_embed_2d(dim, enc.grid_size[0], enc.n_prefix, repeats)
        self.decoder_pos_embed = nn.Parameter(pos, requires_grad=False)
        if vit_config.channel_agnostic:
            # Without it, masked tokens of different channels at one position look identical.
            self.decoder_channel_embed = nn.Parameter(torch.zeros(1, channels, 1, dim))
        else:
            self.decoder_channel_embed = None
        self.decoder_blocks = nn.ModuleList(
            Block(dim, mae_config.decoder_heads, 4.0, qkv_bias=True)
            for _ in range(mae_config.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=LN_EPS)
        pixels = vit_config.patch_size**2 * (1 if vit_config.channel_agnostic else channels)
        self.decoder_pred = nn.Linear(dim, pixels)
        self._init_decoder()

    def _init_decoder(self) -> None:
        for name, module in self.named_modules():
            if name.startswith("encoder"):
                continue
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)
        if self.decoder_channel_embed is not None:
            nn.init.normal_(self.decoder_channel_embed, std=0.02)

    @property
    def vit_config(self) -> ViTConfig:
        """Architecture of the encoder."""
        return self.encoder.config

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels per token, in token order: (B, N, p*p*C), or (B, C*N, p*p) channel-agnostic."""
        b, c, h, w = x.shape
        p = self.vit_config.patch_size
        patches = x.reshape(b, c, h // p, p, w // p, p)
        if self.vit_config.channel_agnostic:
            return patches.permute(0, 1, 2, 4, 3, 5).reshape(b, c * (h // p) * (w // p), p * p)
        return patches.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)

    def random_masking(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample random shuffle by uniform noise: (keep_idx (B, K), mask (B, T) with
        1 = masked, restore_idx (B, T) that undoes the shuffle)."""
        device = self.mask_token.device
        noise = torch.rand(batch, self.n_tokens, generator=generator).to(device)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        keep = shuffle[:, : self.n_keep]
        mask = torch.ones(batch, self.n_tokens, device=device)
        mask[:, : self.n_keep] = 0.0
        mask = torch.gather(mask, 1, restore)
        return keep, mask, restore

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss on self-standardised images ``x``: returns (loss, prediction (B, T, pixels),
        mask (B, T) with 1 = masked)."""
        if x.shape[1] != self.vit_config.in_chans:
            raise ValueError(
                f"MAE input: {x.shape[1]} channels, expected {self.vit_config.in_chans}"
            )
        keep, mask, restore = self.random_masking(x.shape[0], generator)
        latent = self.encoder(x, mask_keep_idx=keep)
        pred = self._decode(latent, restore)
        target = self.patchify(x)
        if self.mae_config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + NORM_PIX_EPS).sqrt()
        per_token = ((pred - target) ** 2).mean(dim=-1)
        loss = (per_token * mask).sum() / mask.sum()
        return loss, pred, mask

    def _decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        n_prefix = self.encoder.n_prefix
        y = self.decoder_embed(latent)
        b, _, dim = y.shape
        prefix, kept = y[:, :n_prefix], y[:, n_prefix:]
        masked = self.mask_token.expand(b, self.n_tokens - kept.shape[1], dim)
        tokens = torch.cat([kept, masked], dim=1)
        tokens = torch.gather(tokens, 1, restore.unsqueeze(-1).expand(-1, -1, dim))
        tokens = tokens + self.decoder_pos_embed[:, n_prefix:]
        if self.decoder_channel_embed is not None:
            c = self.decoder_channel_embed.shape[1]
            tokens = (tokens.reshape(b, c, -1, dim) + self.decoder_channel_embed).reshape(
                b, self.n_tokens, dim
            )
        z = torch.cat([prefix + self.decoder_pos_embed[:, :n_prefix], tokens], dim=1)
        for block in self.decoder_blocks:
            z = block(z)
        return self.decoder_pred(self.decoder_norm(z)[:, n_prefix:])


def _as_vit_config(config: ViTConfig | Mapping[str, Any]) -> ViTConfig:
    return config if isinstance(config, ViTConfig) else ViTConfig.from_dict(config)


def _as_mae_config(config: MAEConfig | Mapping[str, Any] | None) -> MAEConfig:
    if config is None:
        return MAEConfig()
    return config if isinstance(config, MAEConfig) else MAEConfig.from_dict(config)


# --------------------------------------------------------------------------- training


def augment_dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flip and 90-degree rotation per image (one of the 8 symmetries of the square)."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"augment_dihedral: images must be square, got {tuple(x.shape[-2:])}")
    choice = torch.randint(0, 8, (x.shape[0],), generator=generator)
    out = torch.empty_like(x)
    for op in choice.unique().tolist():
        rows = torch.nonzero(choice == op).flatten().to(x.device)
        picked = x[rows]
        if op >= 4:
            picked = picked.flip(-1)
        out[rows] = torch.rot90(picked, op % 4, dims=(-2, -1))
    return out


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Linear warmup over ``warmup_steps`` (from 1/warmup), then cosine decay to 0 at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def _step_generator(seed: int, step: int) -> torch.Generator:
    """Generator for the masks and augmentations of one step, a function of (seed, step) only."""
    state = np.random.SeedSequence([seed, step, 7]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def _images_fingerprint(images: Any) -> str:
    """Hash of shape, dtype and up to 16 evenly spaced images (cheap, even for memmaps)."""
    n = images.shape[0]
    picks = np.unique(np.linspace(0, n - 1, num=min(n, 16)).astype(np.int64))
    digest = hashlib.sha1(f"{tuple(images.shape)}|{images.dtype}".encode())
    digest.update(np.ascontiguousarray(images[picks]).tobytes())
    return digest.hexdigest()


def _optimizer(model: MAE, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or name.split(".")[-1] in _NO_DECAY_NAMES
        (no_decay if skip else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS)


def _numpy_rng_state() -> dict[str, Any]:
    """NumPy's global generator state with the key as a tensor (loadable with weights_only).

    Training itself draws only from (seed, step) generators; the global states are saved so
    that anything else drawing from them continues as in an uninterrupted run.
    """
    state = np.random.get_state(legacy=False)  # noqa: NPY002
    key = torch.from_numpy(state["state"]["key"].astype(np.int64))
    return {**state, "state": {"key": key, "pos": int(state["state"]["pos"])}}


def _set_numpy_rng_state(state: Mapping[str, Any]) -> None:
    key = state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state({**state, "state": {"key": key, "pos": int(state["state"]["pos"])}})  # noqa: NPY002


def _validate_training(
    images: Any,
    config: ViTConfig,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    seed: int,
) -> None:
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4 or shape[0] < 1:
        raise ValueError(f"train_mae images: expected a non-empty (n, C, H, W) array, got {shape}")
    if shape[1:] != (config.in_chans, config.img_size, config.img_size):
        raise ValueError(
            f"train_mae images: shape {shape}, but the model expects (n, {config.in_chans}, "
            f"{config.img_size}, {config.img_size}) (ViTConfig.in_chans / img_size)"
        )
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"train_mae {name}: expected an integer >= {low}, got {value!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"train_mae warmup_steps: expected an integer >= 0, got {warmup!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"train_mae seed: expected an integer >= 0, got {seed!r}")
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            # YAML reads "1e-3" (no dot) as a string, hence the type in the message.
            raise ValueError(
                f"train_mae {name}: expected a number >= 0, got {value!r} ({type(value).__name__})"
            )
    if lr == 0:
        raise ValueError("train_mae lr: expected > 0, got 0")


def _signature(
    images: Any,
    vit_config: ViTConfig,
    mae_config: MAEConfig,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint's: architecture, every optimisation
    setting (the learning-rate schedule depends on ``steps``) and the images. An
    "instance_norm" run carries the input normalisation's revision: a checkpoint saved when it
    meant the full-scale division does not resume under the reference's."""
    vit = vit_config.to_dict()
    if vit["input_norm"] == "instance_norm":
        vit[INPUT_NORM_REVISION_KEY] = INPUT_NORM_REVISION
    return {
        "vit": vit,
        "mae": mae_config.to_dict(),
        **settings,
        "images": _images_fingerprint(images),
    }


def _training_state(
    vit_config: ViTConfig,
    mae_config: MAEConfig,
    seed: int,
    device: torch.device,
    lr: float,
    weight_decay: float,
    steps: int,
    warmup_steps: int,
) -> tuple[MAE, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """A freshly initialised MAE (from ``seed``, without touching the global generator), its
    AdamW and the warmup-then-cosine learning-rate schedule."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MAE(vit_config, mae_config)
    model.to(device)
    optimizer = _optimizer(model, lr, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps, warmup_steps)
    )
    return model, optimizer, scheduler


def _checkpoint_state(
    model: MAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    history: Mapping[str, list],
) -> dict[str, Any]:
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": _numpy_rng_state(),
        "history": dict(history),
    }


def _restore(
    saved: Mapping[str, Any],
    model: MAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, dict[str, list]]:
    """Load a checkpoint's state; returns (step, history)."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"].cpu())
    _set_numpy_rng_state(saved["numpy_rng"])
    history = {column: list(saved["history"][column]) for column in HISTORY_COLUMNS}
    return int(saved["step"]), history


def _mae_step(
    model: MAE,
    x: torch.Tensor,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
) -> tuple[float, float]:
    """One AdamW step on a standardised batch; returns (loss, learning rate used)."""
    loss, _, _ = model(x, generator)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"MAE loss is {loss.item()} at step {step} (lr {scheduler.get_last_lr()[0]:.3g}); "
            "try a lower lr or more warmup_steps"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    current_lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return float(loss.item()), current_lr


def train_mae(
    images: np.ndarray,
    vit_config: ViTConfig | Mapping[str, Any],
    mae_config: MAEConfig | Mapping[str, Any] | None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float = schema_default(f"{_KEY}.weight_decay"),
    warmup_steps: int,
    seed: int,
    device: str | torch.device = "cpu",
    augment: bool = schema_default(f"{_KEY}.augment"),
    checkpoint_path: PathLike | None = None,
    checkpoint_every: int = 200,
    log_every: int = 25,
    where: str = "train_mae images",
) -> tuple[MAE, pd.DataFrame]:
    """Pre-train an MAE on ``images`` (n, C, H, W), uint16 or float, typically memory-mapped.

    AdamW (betas 0.9/0.95, no decay on biases, norms and tokens), linear warmup then cosine
    decay, random flips/90-degree rotations when ``augment``. Only each batch is read from
    ``images``. With ``checkpoint_path`` the full training state is saved atomically every
    ``checkpoint_every`` steps and at the end, and a run whose settings match the checkpoint
    resumes from it (`cellconcepts.dictionary.checkpoint`: otherwise a warning and a fresh
    start). Returns the model in eval mode and the per-step history (step, loss, lr, seconds
    since the start of training).
    """
    vit_config = _as_vit_config(vit_config)
    mae_config = _as_mae_config(mae_config)
    _validate_training(images, vit_config, steps, batch_size, lr, weight_decay, warmup_steps, seed)
    if checkpoint_every < 1 or log_every < 1:
        raise ValueError(
            f"train_mae: checkpoint_every ({checkpoint_every}) and log_every ({log_every}) "
            "must be >= 1"
        )
    device = torch.device(device)
    model, optimizer, scheduler = _training_state(
        vit_config, mae_config, seed, device, lr, weight_decay, steps, warmup_steps
    )
    sampler = BatchSampler(np.arange(int(images.shape[0])), batch_size, seed)
    settings = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "augment": augment,
    }
    signature = _signature(images, vit_config, mae_config, settings)
    history: dict[str, list] = {column: [] for column in HISTORY_COLUMNS}
    start = 0
    saved = load_checkpoint(checkpoint_path, signature, device) if checkpoint_path else None
    if saved is not None:
        start, history = _restore(saved, model, optimizer, scheduler)
        log.info("resuming MAE training from %s at step %d/%d", checkpoint_path, start, steps)

    def save(step: int) -> None:
        state = _checkpoint_state(model, optimizer, scheduler, step, history)
        save_checkpoint(checkpoint_path, state, signature)

    log.info(
        "training MAE: %s; decoder %dx%d; %d images; %d steps of %d",
        describe_encoder(model.encoder),
        mae_config.decoder_dim,
        mae_config.decoder_depth,
        images.shape[0],
        steps,
        sampler.batch_size,
    )
    offset = history["seconds"][-1] if history["seconds"] else 0.0
    began = time.perf_counter()
    model.train()
    bar = tqdm(total=steps, initial=start, desc="MAE", leave=False)
    for step in range(start, steps):
        rows = sampler.rows(step)
        raw = np.asarray(images[rows])
        check_finite_pixels(raw, rows, where)
        x = normalize_images(raw, vit_config.input_norm).to(device)
        generator = _step_generator(seed, step)
        if augment:
            x = augment_dihedral(x, generator)
        value, current_lr = _mae_step(model, x, generator, optimizer, scheduler, step)
        for column, item in zip(
            HISTORY_COLUMNS,
            (step, value, current_lr, offset + time.perf_counter() - began),
            strict=True,
        ):
            history[column].append(item)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if (step + 1) % log_every == 0 or step == start:
            log.info("step %d/%d loss %.4f lr %.3g", step + 1, steps, value, current_lr)
        if checkpoint_path is not None and (step + 1) % checkpoint_every == 0:
            save(step + 1)
    bar.close()
    if checkpoint_path is not None and start < steps:
        save(steps)
    model.eval()
    return model, pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
