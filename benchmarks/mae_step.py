"""Time MAE training steps and crop-token extraction for two ViT sizes side by side.

    python benchmarks/mae_step.py --threads 2                 # demo sizes on CPU
    python benchmarks/mae_step.py --device cuda --batch 256   # on a GPU

The demo's MAE (width 96, 4 blocks, decoder 64 x 1) against the wider one first tried
(width 128, 6 blocks, decoder 64 x 2), on random 6 x 64 x 64 uint16 crops. Prints ms per
training step and per extracted image, and the ratios; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cellconcepts.device import resolve_device
from cellconcepts.microscopy.extract import available_layers, extract_crop_tokens
from cellconcepts.microscopy.mae import MAE, MAEConfig
from cellconcepts.microscopy.vit import ViTConfig, self_standardize

SIZES = {
    "demo (96 x 4, dec 64 x 1)": (
        ViTConfig(embed_dim=96, depth=4, num_heads=4),
        MAEConfig(decoder_dim=64, decoder_depth=1),
    ),
    "wide (128 x 6, dec 64 x 2)": (
        ViTConfig(embed_dim=128, depth=6, num_heads=4),
        MAEConfig(decoder_dim=64, decoder_depth=2),
    ),
}


def time_training(vit: ViTConfig, mae: MAEConfig, x: torch.Tensor, steps: int) -> float:
    model = MAE(vit, mae).to(x.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator(device=x.device).manual_seed(0)
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss, _, _ = model(x, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=512, help="images to extract")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 30000, size=(args.images, 6, 64, 64), dtype=np.uint16)
    batch = self_standardize(images[: args.batch]).to(device)
    results = {}
    for name, (vit, mae) in SIZES.items():
        step = time_training(vit, mae, batch, args.steps)
        encoder = MAE(vit, mae).encoder
        start = time.perf_counter()
        extract_crop_tokens(
            encoder, images, available_layers(encoder), device=str(device), progress=False
        )
        per_image = (time.perf_counter() - start) / len(images)
        results[name] = (step, per_image)
        print(f"{name}: {1000 * step:.1f} ms/step, {1000 * per_image:.2f} ms/image extracted")
    (demo_step, demo_image), (wide_step, wide_image) = results.values()
    ratios = (wide_step / demo_step, wide_image / demo_image)
    print("wide / demo: training {:.2f}x, extraction {:.2f}x".format(*ratios))


if __name__ == "__main__":
    main()
