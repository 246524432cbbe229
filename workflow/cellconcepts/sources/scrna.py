"""scRNA branch: cell embeddings from a small expression autoencoder (the demo's scRNA "model").

The demo trains an MLP autoencoder on ``scanpy.datasets.pbmc68k_reduced()`` (real PBMC data
shipped inside scanpy, so it runs offline) and uses each cell's latent vector as its token, the
way scFeatureLens uses a foundation model's cell embedding.

Reading the expression data is `cellconcepts.sources.expression` (no torch there). Any h5ad
that already carries a cell embedding in ``obsm`` (Geneformer, scGPT, scVI, ...) does
not need this model: read it directly with ``cellconcepts.store.readers.read_embeddings(path,
obsm_key=...)`` and write a token store from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from cellconcepts.files import PathLike, atomic_path
from cellconcepts.sources.expression import expression_matrix

log = logging.getLogger(__name__)


class ExpressionAutoencoder(nn.Module):
    """MLP autoencoder: genes -> hidden (LayerNorm, ReLU) -> latent -> hidden -> genes.

    The latent (linear, unconstrained) is the cell embedding used as a token.
    """

    def __init__(self, n_genes: int, hidden_dim: int = 256, latent_dim: int = 32) -> None:
        super().__init__()
        self.n_genes = int(n_genes)
        self.hidden_dim = int(hidden_dim)
        self.latent_dim = int(latent_dim)
        self.encoder = nn.Sequential(
            nn.Linear(self.n_genes, self.hidden_dim),
            nn.LayerNorm(self.hidden_dim),
            nn.ReLU(),
            nn.Linear(self.hidden_dim, self.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(self.latent_dim, self.hidden_dim),
            nn.LayerNorm(self.hidden_dim),
            nn.ReLU(),
            nn.Linear(self.hidden_dim, self.n_genes),
        )

    @property
    def config(self) -> dict[str, int]:
        return {
            "n_genes": self.n_genes,
            "hidden_dim": self.hidden_dim,
            "latent_dim": self.latent_dim,
        }

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Cell embedding (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed expression (B, n_genes)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def train_expression_autoencoder(
    X: Any,
    *,
    latent_dim: int = 32,
    hidden_dim: int = 256,
    epochs: int = 200,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[ExpressionAutoencoder, pd.DataFrame]:
    """Fit an :class:`ExpressionAutoencoder` to ``X`` (cells, genes) with MSE and AdamW.

    Initialisation uses ``seed`` without touching the global torch RNG; mini-batch order comes
    from a ``torch.Generator`` seeded the same way, so the same inputs give the same model.
    Returns the model (in eval mode, on ``device``) and a history with one row per epoch
    (``epoch`` from 1, ``loss`` = mean per-element squared error over the epoch's batches).
    """
    data = expression_matrix(X)
    for name, value in {"latent_dim": latent_dim, "hidden_dim": hidden_dim}.items():
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs!r}, {batch_size!r}")
    torch_device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ExpressionAutoencoder(data.shape[1], hidden_dim, latent_dim)
    model.to(torch_device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(data).to(torch_device)
    n = x_all.shape[0]

    history: list[dict[str, float]] = []
    model.train()
    progress = tqdm(range(1, epochs + 1), desc="autoencoder", leave=False, disable=None)
    for epoch in progress:
        order = torch.randperm(n, generator=generator).to(torch_device)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = x_all[order[start : start + batch_size]]
            loss = nn.functional.mse_loss(model(batch), batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * batch.shape[0]
        history.append({"epoch": epoch, "loss": total / n})
        progress.set_postfix(loss=f"{total / n:.4f}")
    model.eval()
    frame = pd.DataFrame(history, columns=["epoch", "loss"])
    log.info(
        "autoencoder %d genes -> %d latent: loss %.4f (epoch 1) -> %.4f (epoch %d)",
        data.shape[1],
        latent_dim,
        frame["loss"].iloc[0],
        frame["loss"].iloc[-1],
        epochs,
    )
    return model, frame


@torch.no_grad()
def embed_cells(model: ExpressionAutoencoder, X: Any, batch_size: int = 1024) -> np.ndarray:
    """Latent embedding of every cell of ``X``: (n_cells, latent_dim) float32, in input order."""
    data = expression_matrix(X)
    if data.shape[1] != model.n_genes:
        raise ValueError(
            f"X has {data.shape[1]} genes but the model was trained on {model.n_genes}"
        )
    model.eval()
    device = next(model.parameters()).device
    out = np.empty((data.shape[0], model.latent_dim), dtype=np.float32)
    for start in range(0, data.shape[0], batch_size):
        batch = torch.from_numpy(data[start : start + batch_size]).to(device)
        out[start : start + batch.shape[0]] = model.encode(batch).float().cpu().numpy()
    return out


def save_expression_model(
    model: ExpressionAutoencoder, path: PathLike, meta: dict[str, Any] | None = None
) -> None:
    """Save weights, architecture and ``meta`` to ``path`` (torch file), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_expression_model(
    path: PathLike, map_location: str = "cpu"
) -> tuple[ExpressionAutoencoder, dict[str, Any]]:
    """Load a model written by :func:`save_expression_model`; returns (model in eval mode, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expression model {str(path)!r} not found")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    missing = {"config", "state_dict"} - set(payload)
    if missing:
        raise ValueError(
            f"{str(path)!r} is not an expression-autoencoder checkpoint: missing {sorted(missing)}"
        )
    model = ExpressionAutoencoder(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location)
    model.eval()
    return model, dict(payload.get("meta", {}))
