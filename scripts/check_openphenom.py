"""Check this workflow's OpenPhenom embeddings against the reference implementation's.

Produce reference embeddings once with Recursion's own code, on a few images of your own:
download `recursionpharma/OpenPhenom` from Hugging Face into models/OpenPhenom (its weights
and the reference code: huggingface_mae.py and the modules beside it), install the reference's
requirements (timm 0.9.7 and transformers; its requirements.txt pins torch 2.1, but any torch
that timm 0.9.7 runs on will do: checked with torch 2.13) and run, from the folder that holds
models/ and crops.npy:

    import sys

    import numpy as np
    import torch

    sys.path.insert(0, "models/OpenPhenom")  # the Hugging Face checkout: the reference code
    from huggingface_mae import MAEConfig, MAEModel

    model = MAEModel(MAEConfig.from_pretrained("models/OpenPhenom"))
    # model.safetensors is a torch pickle despite its name. MAEModel.from_pretrained calls
    # torch.load on its path, which recent torch (2.13) hands to safetensors ("header too
    # large"); opened as a file object it is read as the pickle it is.
    with open("models/OpenPhenom/model.safetensors", "rb") as handle:
        model.load_state_dict(torch.load(handle, map_location="cpu")["state_dict"])
    model.eval()
    images = np.load("crops.npy")  # (n, C, 256, 256), uint8 or uint16
    with torch.no_grad():
        np.save("reference.npy", model.predict(torch.from_numpy(images)).numpy())

then, in this project's environment:

    python scripts/check_openphenom.py models/OpenPhenom crops.npy reference.npy

It loads the checkpoint as the workflow does (`config/openphenom_rxrx3.yaml`'s architecture,
i.e. `cellconcepts.microscopy.vit.openphenom_config()`, unless --config names another), embeds
the images at the last block (OpenPhenom's predict(): pixels / 255 whatever their dtype, then
InstanceNorm2d, and the mean of the patch tokens, CLS left out; input_norm "instance_norm")
and prints the largest difference relative to the reference; exit status 1 above
--tolerance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

from cellconcepts.microscopy.extract import extract_crop_tokens, load_image_encoder
from cellconcepts.microscopy.vit import openphenom_config


def architecture(config: Path | None, dataset: str | None) -> dict:
    """The architecture of a workflow config's microscopy dataset, or OpenPhenom's."""
    if config is None:
        return openphenom_config().to_dict()
    datasets = yaml.safe_load(config.read_text())["datasets"]
    name = dataset or next(n for n, d in datasets.items() if d.get("kind") == "microscopy")
    return datasets[name]["microscopy"]["model"]["architecture"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the OpenPhenom directory or weights file")
    parser.add_argument("images", type=Path, help=".npy of raw images (n, C, H, W), 8- or 16-bit")
    parser.add_argument("reference", type=Path, help=".npy of the reference's predict() (n, D)")
    parser.add_argument("--config", type=Path, help="a workflow config naming the architecture")
    parser.add_argument("--dataset", help="its microscopy dataset (default: the first)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    described = architecture(args.config, args.dataset)
    encoder = load_image_encoder(args.checkpoint, described, args.device)
    images = np.load(args.images, mmap_mode="r")
    depth = len(encoder.blocks)
    ours = extract_crop_tokens(encoder, images, [depth], device=args.device)[depth]
    reference = np.load(args.reference)
    if ours.shape != reference.shape:
        print(f"shapes differ: ours {ours.shape}, reference {reference.shape}")
        return 1
    per_image = np.abs(ours - reference).max(axis=1) / np.abs(reference).max(axis=1)
    worst = int(per_image.argmax())
    print(
        f"{len(images)} images, block {depth} of {depth} ({encoder.config.input_norm}, "
        f"{encoder.config.block}): largest relative difference {per_image.max():.2e} "
        f"(image {worst}); median {np.median(per_image):.2e}"
    )
    return 0 if per_image.max() <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
