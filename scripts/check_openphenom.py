"""Check this workflow's OpenPhenom embeddings against the reference implementation's.

Produce reference embeddings once with Recursion's maes_microscopy (the versions its
requirements.txt pins: timm 0.9.7, torch 2.1), on a few images of your own:

    from huggingface_mae import MAEModel
    model = MAEModel.from_pretrained("models/OpenPhenom").eval()
    images = np.load("crops.npy")                      # (n, 6, 256, 256) uint8
    np.save("reference.npy", model.predict(torch.from_numpy(images)).detach().numpy())

then, in this project's environment:

    python scripts/check_openphenom.py models/OpenPhenom crops.npy reference.npy

It loads the checkpoint as the workflow does (`config/openphenom_rxrx3.yaml`'s architecture,
i.e. `cellconcepts.microscopy.vit.openphenom_config()`, unless --config names another), embeds
the images at the last block (OpenPhenom's predict(): the mean of the patch tokens, CLS left
out) and prints the largest difference relative to the reference; exit status 1 above
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
    parser.add_argument("images", type=Path, help=".npy of raw images (n, C, H, W), uint8")
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
