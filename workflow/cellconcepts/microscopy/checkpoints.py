"""Reading and writing :class:`~cellconcepts.microscopy.vit.ViTEncoder` checkpoints.

:func:`save_pretrained` writes a Hugging Face-style directory (``config.json`` +
``model.safetensors``); :func:`load_encoder` reads such a directory, or a single timm-layout
weights file (safetensors, or a torch pickle even when named ``.safetensors``, as OpenPhenom's
is), unwraps "state_dict"/"model" nesting, strips wrapper prefixes (MAE, OpenPhenom, Lightning),
drops decoder/head keys and checks the rest against the architecture.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from cellconcepts.files import PathLike, atomic_path
from cellconcepts.microscopy.vit import ViTConfig, ViTEncoder, describe_config
from cellconcepts.store import layout

log = logging.getLogger(__name__)

MODEL_TYPE = layout.ENCODER_MODEL_TYPE
CONFIG_FILE = layout.ENCODER_CONFIG
SAFETENSORS_FILE = layout.ENCODER_WEIGHTS
PYTORCH_FILE = "pytorch_model.bin"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Wrapper prefixes seen in timm/MAE/OpenPhenom/Lightning checkpoints, tried in this order.
KNOWN_PREFIXES = ("", "encoder.vit_backbone.", "vit_backbone.", "encoder.", "module.", "backbone.")
# Keys (after prefix stripping) that belong to MAE decoders or classifier heads, not the encoder.
DROPPED_PREFIXES = ("decoder", "mask_token", "head.", "fc_norm.")
# Written to config.json by save_pretrained: a saved directory without it predates "instance_norm"
# following the reference for every dtype, and its "instance_norm" is read as the full-scale one.
INPUT_NORM_REVISION_KEY = "input_norm_revision"
INPUT_NORM_REVISION = 2


def save_pretrained(
    encoder: ViTEncoder,
    directory: PathLike,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a Hugging Face-style directory: ``config.json`` + ``model.safetensors``.

    Each file is written under a temporary name and renamed into place, the weights first, so a
    crash never leaves a config beside weights it does not describe. ``extra_meta``
    (JSON-serialisable) is stored in ``config.json`` next to the architecture and must not
    reuse its keys. ``config.json`` also carries :data:`INPUT_NORM_REVISION`, so that a later
    reader knows what its ``input_norm`` meant.
    """
    directory = Path(directory)
    config = {
        "model_type": MODEL_TYPE,
        **encoder.config.to_dict(),
        INPUT_NORM_REVISION_KEY: INPUT_NORM_REVISION,
    }
    extra = dict(extra_meta or {})
    clash = sorted(set(extra) & set(config))
    if clash:
        raise ValueError(f"save_pretrained: extra_meta keys {clash} clash with config keys")
    config.update(extra)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / SAFETENSORS_FILE) as tmp:
        safetensors.torch.save_file(state, tmp, metadata={"format": "pt"})
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=2, default=str) + "\n")
    log.info("saved encoder (%s) to %s", describe_config(encoder.config), directory)
    return directory


def load_encoder(
    path: PathLike,
    config: ViTConfig | Mapping[str, Any] | None = None,
    *,
    device: str | torch.device = "cpu",
) -> ViTEncoder:
    """Load an encoder (eval mode, on ``device``) from a saved directory or a weights file.

    ``path`` is a directory with ``model.safetensors`` or ``pytorch_model.bin`` (architecture
    from ``config.json`` unless ``config`` is given), or a single ``.safetensors``/``.pth``/
    ``.pt``/``.bin`` file in timm layout, whose architecture ``config`` must give. State dicts
    may be nested under "state_dict"/"model" and carry a wrapper prefix; decoder and head keys
    are dropped; the rest must match exactly.
    """
    path = Path(path)
    if path.is_dir():
        weights = _weights_in_directory(path)
        if config is None:
            config = _config_from_directory(path)
    elif path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ValueError(
                f"{path}: expected a weights file ending in {', '.join(WEIGHT_SUFFIXES)} "
                "or a directory with config.json + model.safetensors"
            )
        if config is None:
            raise ValueError(
                f"{path}: a single weights file needs the architecture (config) to be given"
            )
        weights = path
    else:
        raise FileNotFoundError(f"encoder checkpoint not found: {path}")
    if not isinstance(config, ViTConfig):
        config = ViTConfig.from_dict(config)
    state = _read_state_dict(weights)
    encoder = ViTEncoder(config)
    encoder.load_state_dict(_match_state_dict(state, encoder, weights), strict=True)
    log.info("loaded encoder (%s) from %s", describe_config(config), weights)
    return encoder.to(device).eval()


def _weights_in_directory(path: Path) -> Path:
    for name in (SAFETENSORS_FILE, PYTORCH_FILE):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: no {SAFETENSORS_FILE} or {PYTORCH_FILE} in this directory")


def _config_from_directory(path: Path) -> ViTConfig:
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"{path}: no {CONFIG_FILE}; pass the architecture (config) explicitly")
    meta = json.loads(config_path.read_text())
    model_type = meta.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ValueError(
            f"{config_path}: model_type {model_type!r} is not {MODEL_TYPE!r}; pass the encoder "
            "architecture (config) explicitly to load these weights"
        )
    names = {f.name for f in fields(ViTConfig)}
    config = {k: v for k, v in meta.items() if k in names}
    if config.get("input_norm") == "instance_norm" and INPUT_NORM_REVISION_KEY not in meta:
        # Saved when "instance_norm" divided 16-bit images by 65535 and took floats as they
        # were: the weights were trained and their tokens made that way.
        config["input_norm"] = "instance_norm_fullscale"
        log.info(
            "%s: saved before input_norm 'instance_norm' followed OpenPhenom's pixels / 255 for "
            "every dtype; read as 'instance_norm_fullscale', as it was trained",
            config_path,
        )
    return ViTConfig.from_dict(config)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch file, unwrapped from "state_dict"/"model" nesting."""
    state: Any = None
    if path.suffix == ".safetensors":
        try:
            state = safetensors.torch.load_file(path, device="cpu")
        except safetensors.SafetensorError:
            # Some published ".safetensors" files are torch pickles (OpenPhenom's is).
            log.info("%s is not in safetensors format; reading it with torch.load", path)
    if state is None:
        try:
            # A file object, because torch.load hands paths ending in .safetensors to safetensors.
            with open(path, "rb") as handle:
                state = torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"{path}: cannot read weights safely ({type(err).__name__}: {err}). "
                "Re-save the tensors alone, e.g. torch.save(model.state_dict(), 'weights.pth')"
            ) from err
    while isinstance(state, Mapping):
        nested = [key for key in ("state_dict", "model") if isinstance(state.get(key), Mapping)]
        if not nested:
            break
        state = state[nested[0]]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state)}")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path}: no tensors found in the state dict")
    return tensors


def _match_state_dict(
    state: Mapping[str, torch.Tensor], encoder: ViTEncoder, where: Path
) -> dict[str, torch.Tensor]:
    """Strip the wrapper prefix that matches most encoder keys, drop decoder/head keys, and
    check names and shapes; raises ValueError naming the file and the bad keys."""
    expected = encoder.state_dict()
    candidates = list(KNOWN_PREFIXES)
    for key in state:
        for anchor in ("patch_embed.proj.weight", "pos_embed"):
            if key.endswith(anchor):
                candidates.append(key[: -len(anchor)])

    def stripped(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    prefix = max(candidates, key=lambda p: len(set(stripped(p)) & set(expected)))
    matched = {k: v for k, v in stripped(prefix).items() if not k.startswith(DROPPED_PREFIXES)}
    # Listed in model order (missing, shapes) and file order (unexpected) for readable errors.
    missing = [k for k in expected if k not in matched]
    unexpected = [k for k in matched if k not in expected]
    shapes = [
        f"{k}: file {tuple(matched[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in matched and matched[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = []
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
                problems.append(f"{label} ({len(items)}): {items[:10]}{more}")
        raise ValueError(
            f"{where}: weights do not match the encoder architecture "
            f"({describe_config(encoder.config)}; prefix stripped: {prefix!r}); "
            + "; ".join(problems)
        )
    return matched
