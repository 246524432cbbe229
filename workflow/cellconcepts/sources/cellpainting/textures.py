"""Texture banks of the simulated Cell Painting screen: periodic smoothed noise (chromatin,
reticular ER, mitochondrial puncta, cytoplasm) that every channel is textured from."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_TEXTURES = ("dna", "er", "mito", "cyto")


def _texture_bank(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Periodic noise textures, padded so that any ``size`` crop at offset < bank is a slice."""
    bank = max(256, 2 * size)

    def smooth(sigma: float | tuple[float, float]) -> np.ndarray:
        field = ndimage.gaussian_filter(rng.standard_normal((bank, bank)), sigma, mode="wrap")
        return (field - field.mean()) / field.std()

    band = smooth(1.0) - 0.6 * smooth(2.2)
    band /= band.std()
    filaments = np.maximum(smooth((0.6, 1.4)), smooth((1.4, 0.6)))
    textures = {
        "dna": np.clip(1.0 + 0.3 * smooth(0.8) + 0.3 * np.maximum(smooth(0.6) - 1.2, 0), 0.3, None),
        "er": 0.3 + np.exp(-((band / 0.45) ** 2)),
        "mito": np.maximum(filaments - 0.7, 0.0),
        "cyto": np.clip(1.0 + 0.25 * smooth(2.5), 0.3, None),
    }
    return {
        name: np.pad(t / t.mean(), ((0, size), (0, size)), mode="wrap").astype(np.float32)
        for name, t in textures.items()
    }
