"""Sparse dictionaries: ICFL (batched OMP encoder, Donhauser et al. 2025) and the TopK SAE baseline.

Both models work on already-transformed tokens (control-centred or PCA-whitened, unit norm),
float32, on any device. The decoder ``W_dec`` is (d, M) with unit-norm columns (one per feature)
and ``b_pre`` (d,) is a learned offset subtracted before encoding and added after decoding.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cellconcepts.io import atomic_path

logger = logging.getLogger(__name__)

METHODS = ("icfl", "topk")

# Relative ridge added to the L x L Gram of the selected atoms (scaled by its mean diagonal):
# small enough not to bias well-conditioned solves, large enough that nearly collinear selections
# stay finite.
_RIDGE = {torch.float64: 1e-10, torch.float32: 1e-5}


def _unit_columns(w: Tensor) -> Tensor:
    return w / torch.linalg.vector_norm(w, dim=0, keepdim=True).clamp_min(1e-12)


def _linear_init(input_dim: int, n_features: int, generator: torch.Generator) -> Tensor:
    """nn.Linear-style init of a (d, M) weight (kaiming uniform, a=sqrt(5)), unit-norm columns."""
    bound = 1.0 / math.sqrt(n_features)
    w = torch.empty(input_dim, n_features).uniform_(-bound, bound, generator=generator)
    return _unit_columns(w)


def _solve_small_spd(gram: Tensor, rhs: Tensor) -> Tensor:
    """Solve gram @ z = rhs for a batch of small SPD systems (B, L, L), (B, L) -> (B, L).

    A ridge relative to the mean diagonal keeps (near-)collinear selections solvable; rows whose
    Cholesky still fails fall back to a pseudo-inverse.
    """
    n = gram.shape[-1]
    ridge = _RIDGE.get(gram.dtype, 1e-5)
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    regularised = gram + (ridge * scale)[:, None, None] * eye
    chol, info = torch.linalg.cholesky_ex(regularised)
    z = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
    failed = info != 0
    if bool(failed.any()):
        rows = failed.nonzero().squeeze(-1)
        z[rows] = (torch.linalg.pinv(regularised[rows]) @ rhs[rows].unsqueeze(-1)).squeeze(-1)
    return z


def icfl_encode(
    x: Tensor, W_dec: Tensor, b_pre: Tensor, n_iterations: int, atoms_per_iteration: int
) -> Tensor:
    """ICFL encoder (Algorithm 1, batched OMP) for rows of ``x`` (B, d); dense codes (B, M).

    r = x - b_pre; J times: S = the L columns with the largest *signed* <W_m, r>; least squares of
    r on W_dec[:, S] only; r -= W_S z_t; z[S] += z_t. Codes may be negative and have at most J*L
    non-zeros per row. No gradient flows through the encoder.
    """
    if x.ndim != 2 or x.shape[1] != W_dec.shape[0]:
        raise ValueError(
            f"icfl_encode: x must have shape (B, {W_dec.shape[0]}) to match W_dec "
            f"{tuple(W_dec.shape)}, got {tuple(x.shape)}"
        )
    n_features = W_dec.shape[1]
    if not 1 <= atoms_per_iteration <= n_features:
        raise ValueError(
            f"icfl_encode: atoms_per_iteration must be in [1, {n_features}], "
            f"got {atoms_per_iteration}"
        )
    if n_iterations < 1:
        raise ValueError(f"icfl_encode: n_iterations must be >= 1, got {n_iterations}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        W = W_dec.detach().to(dtype)
        Wt = W.T.contiguous()  # (M, d): row m is atom m, for gathering
        r = x.detach().to(dtype) - b_pre.detach().to(dtype)
        z = torch.zeros(x.shape[0], n_features, dtype=dtype, device=x.device)
        for _ in range(n_iterations):
            scores = r @ W
            top = torch.topk(scores, atoms_per_iteration, dim=1, sorted=False)
            atoms = Wt[top.indices]  # (B, L, d)
            gram = atoms @ atoms.transpose(1, 2)
            # The right-hand side W_S^T r is exactly the selected scores.
            z_t = _solve_small_spd(gram, top.values)
            r = r - (z_t.unsqueeze(1) @ atoms).squeeze(1)
            z.scatter_add_(1, top.indices, z_t)
    return z.to(x.dtype)


class ICFL(nn.Module):
    """Iterative codebook feature learning: OMP-encoded codes, decoder learned by gradient descent.

    Only ``W_dec`` and ``b_pre`` are parameters; codes come from :func:`icfl_encode` and are held
    fixed during the decoder update.
    """

    method = "icfl"

    def __init__(
        self,
        input_dim: int,
        n_features: int,
        n_iterations: int,
        atoms_per_iteration: int,
        seed: int = 0,
        *,
        resample_every: int = 100,
        resample_threshold: float = 0.9,
        learn_b_pre: bool = True,
    ) -> None:
        super().__init__()
        if input_dim < 1 or n_features < 1:
            raise ValueError(
                f"ICFL: input_dim and n_features must be >= 1, got {input_dim}, {n_features}"
            )
        if n_iterations < 1 or not 1 <= atoms_per_iteration <= n_features:
            raise ValueError(
                f"ICFL: need n_iterations >= 1 and 1 <= atoms_per_iteration <= n_features "
                f"({n_features}), got {n_iterations}, {atoms_per_iteration}"
            )
        self.input_dim = input_dim
        self.n_features = n_features
        self.n_iterations = n_iterations
        self.atoms_per_iteration = atoms_per_iteration
        self.seed = seed
        self.resample_every = resample_every
        self.resample_threshold = resample_threshold
        generator = torch.Generator().manual_seed(seed)
        self.W_dec = nn.Parameter(_linear_init(input_dim, n_features, generator))
        self.b_pre = nn.Parameter(torch.zeros(input_dim))
        self.learn_b_pre = learn_b_pre
        self.last_resampled = torch.empty(0, dtype=torch.long)

    @property
    def learn_b_pre(self) -> bool:
        """Whether b_pre is trained (the paper's loss) or held at its value (False).

        With the stage-wise encoder, the fixed-code gradient lets b_pre drift along directions
        that atoms then absorb; on small problems this drift can undo a recovered dictionary.
        """
        return self.b_pre.requires_grad

    @learn_b_pre.setter
    def learn_b_pre(self, value: bool) -> None:
        self.b_pre.requires_grad_(bool(value))

    @property
    def sparsity(self) -> int:
        """Maximum number of non-zeros per code, J * L."""
        return self.n_iterations * self.atoms_per_iteration

    def config(self) -> dict[str, Any]:
        """Constructor arguments, for :func:`save_model`."""
        return {
            "method": self.method,
            "input_dim": self.input_dim,
            "n_features": self.n_features,
            "sparsity": self.sparsity,
            "n_iterations": self.n_iterations,
            "atoms_per_iteration": self.atoms_per_iteration,
            "seed": self.seed,
            "resample_every": self.resample_every,
            "resample_threshold": self.resample_threshold,
            "learn_b_pre": self.learn_b_pre,
        }

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes (B, M) from the OMP encoder (no gradient)."""
        return icfl_encode(x, self.W_dec, self.b_pre, self.n_iterations, self.atoms_per_iteration)

    def decode(self, z: Tensor) -> Tensor:
        """x_hat = z @ W_dec^T + b_pre."""
        return z @ self.W_dec.T + self.b_pre

    def loss(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, z, x_hat): mean over rows of the squared error summed over dims; z detached."""
        z = self.encode(x)
        x_hat = self.decode(z)
        loss = (x - x_hat).pow(2).sum(-1).mean()
        return loss, z, x_hat

    @torch.no_grad()
    def normalise(self) -> None:
        """Rescale decoder columns to unit norm."""
        self.W_dec.copy_(_unit_columns(self.W_dec))

    def after_step(self, step: int, generator: torch.Generator) -> int:
        """Unit-normalise columns; every ``resample_every`` steps re-draw correlated columns.

        ``step`` is the number of optimiser steps done. Returns how many columns were re-drawn;
        their indices are in ``self.last_resampled`` (the optimiser state for them must be reset).
        """
        self.normalise()
        self.last_resampled = torch.empty(0, dtype=torch.long)
        if self.resample_every > 0 and step > 0 and step % self.resample_every == 0:
            self.last_resampled = self.resample_correlated(generator)
        return int(self.last_resampled.numel())

    @torch.no_grad()
    def resample_correlated(self, generator: torch.Generator) -> Tensor:
        """For every pair of columns with cosine > threshold, re-draw one of them (fair coin).

        Pairs are visited in lexicographic order and a pair is skipped once either column has been
        re-drawn in this round, so each column is re-drawn at most once and every group of
        near-duplicates keeps at least one member. Re-drawn columns are fresh uniformly random
        unit vectors. Returns the re-drawn column indices (CPU, long).
        """
        pairs = correlated_pairs(self.W_dec, self.resample_threshold)
        if len(pairs) == 0:
            return torch.empty(0, dtype=torch.long)
        redrawn = np.zeros(self.n_features, dtype=bool)
        firsts, starts = np.unique(pairs[:, 0], return_index=True)
        ends = np.append(starts[1:], len(pairs))
        for i, start, end in zip(firsts, starts, ends, strict=True):
            if redrawn[i]:
                continue
            partners = pairs[start:end, 1]
            partners = partners[~redrawn[partners]]
            if len(partners) == 0:
                continue
            # coin True: the first column of the pair goes, which ends column i's pairs.
            coins = (torch.rand(len(partners), generator=generator) < 0.5).numpy()
            if coins.any():
                first = int(np.argmax(coins))
                redrawn[partners[:first]] = True
                redrawn[i] = True
            else:
                redrawn[partners] = True
        index = torch.from_numpy(np.flatnonzero(redrawn))
        fresh = torch.randn(self.input_dim, len(index), generator=generator, dtype=torch.float64)
        fresh = _unit_columns(fresh).to(device=self.W_dec.device, dtype=self.W_dec.dtype)
        self.W_dec[:, index.to(self.W_dec.device)] = fresh
        logger.debug("re-drew %d correlated decoder columns", len(index))
        return index


def correlated_pairs(W_dec: Tensor, threshold: float, chunk: int = 2048) -> np.ndarray:
    """Pairs (i, j), i < j, of columns with cosine > threshold, as an (P, 2) int64 array in
    lexicographic order. The M x M cosine matrix is computed in row chunks to bound memory."""
    with torch.no_grad():
        W = _unit_columns(W_dec.detach().float())
        n = W.shape[1]
        found = []
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            cos = W[:, start:stop].T @ W  # (chunk, M)
            rows = torch.arange(start, stop, device=W.device)[:, None]
            cols = torch.arange(n, device=W.device)[None, :]
            hit = (cos > threshold) & (cols > rows)
            ij = hit.nonzero()
            ij[:, 0] += start
            found.append(ij.cpu())
    return torch.cat(found).numpy().astype(np.int64).reshape(-1, 2)


class TopKSAE(nn.Module):
    """TopK sparse autoencoder (Gao et al. 2024): z = ReLU(TopK(W_enc (x - b_pre) + b_enc)).

    AuxK (reconstruct the residual from the top ``aux_k`` dead latents) is off unless ``aux_k``
    is set and :meth:`loss` is given a dead mask.
    """

    method = "topk"

    def __init__(
        self,
        input_dim: int,
        n_features: int,
        k: int,
        *,
        aux_k: int | None = None,
        aux_coef: float = 1 / 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if input_dim < 1 or not 1 <= k <= n_features:
            raise ValueError(
                f"TopKSAE: need input_dim >= 1 and 1 <= k <= n_features ({n_features}), "
                f"got input_dim={input_dim}, k={k}"
            )
        if aux_k is not None and aux_k < 1:
            raise ValueError(f"TopKSAE: aux_k must be None or >= 1, got {aux_k}")
        self.input_dim = input_dim
        self.n_features = n_features
        self.k = k
        self.aux_k = aux_k
        self.aux_coef = aux_coef
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        W_dec = _linear_init(input_dim, n_features, generator)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_pre = nn.Parameter(torch.zeros(input_dim))
        self.last_resampled = torch.empty(0, dtype=torch.long)
        self.last_aux_loss: Tensor | None = None

    @property
    def sparsity(self) -> int:
        """Number of active latents per token, k."""
        return self.k

    def config(self) -> dict[str, Any]:
        """Constructor arguments, for :func:`save_model`."""
        return {
            "method": self.method,
            "input_dim": self.input_dim,
            "n_features": self.n_features,
            "sparsity": self.k,
            "aux_k": self.aux_k,
            "aux_coef": self.aux_coef,
            "seed": self.seed,
        }

    def pre_activations(self, x: Tensor) -> Tensor:
        """W_enc (x - b_pre) + b_enc, (B, M)."""
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"TopKSAE: x must have shape (B, {self.input_dim}), got {tuple(x.shape)}"
            )
        return (x - self.b_pre) @ self.W_enc.T + self.b_enc

    @staticmethod
    def _topk_relu(pre: Tensor, k: int) -> Tensor:
        top = torch.topk(pre, k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes (B, M), at most k non-zero per row, non-negative, differentiable."""
        return self._topk_relu(self.pre_activations(x), self.k)

    def decode(self, z: Tensor) -> Tensor:
        """x_hat = z @ W_dec^T + b_pre."""
        return z @ self.W_dec.T + self.b_pre

    def loss(self, x: Tensor, dead_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, z, x_hat). Loss: mean over rows of the squared error summed over dims, plus
        ``aux_coef`` * AuxK when ``aux_k`` is set and ``dead_mask`` (M,) marks dead latents."""
        pre = self.pre_activations(x)
        z = self._topk_relu(pre, self.k)
        x_hat = self.decode(z)
        error = x - x_hat
        loss = error.pow(2).sum(-1).mean()
        self.last_aux_loss = None
        if self.aux_k is not None and dead_mask is not None:
            dead_mask = dead_mask.to(device=pre.device, dtype=torch.bool)
            n_dead = int(dead_mask.sum())
            if n_dead > 0:
                aux = self._aux_loss(pre, dead_mask, min(self.aux_k, n_dead), error.detach())
                self.last_aux_loss = aux.detach()
                loss = loss + self.aux_coef * aux
        return loss, z, x_hat

    def _aux_loss(self, pre: Tensor, dead_mask: Tensor, k_aux: int, residual: Tensor) -> Tensor:
        """AuxK: reconstruct the residual with the top-k_aux dead latents, normalised by the
        residual's variance (Gao et al. 2024, appendix A.2)."""
        masked = pre.masked_fill(~dead_mask, float("-inf"))
        z_aux = self._topk_relu(masked, k_aux)
        residual_hat = z_aux @ self.W_dec.T
        mse = (residual_hat - residual).pow(2).sum(-1).mean()
        variance = (residual - residual.mean(0)).pow(2).sum(-1).mean()
        return torch.nan_to_num(mse / variance.clamp_min(1e-12), nan=0.0)

    @torch.no_grad()
    def normalise(self) -> None:
        """Rescale decoder columns to unit norm."""
        self.W_dec.copy_(_unit_columns(self.W_dec))

    def after_step(self, step: int, generator: torch.Generator) -> int:
        """Unit-normalise decoder columns; TopK never re-draws columns, so returns 0."""
        self.normalise()
        return 0


def build_model(
    method: str,
    input_dim: int,
    n_features: int,
    sparsity: int,
    *,
    atoms_per_iteration: int = 5,
    aux_k: int | None = None,
    seed: int = 0,
) -> ICFL | TopKSAE:
    """ICFL with J = sparsity // atoms_per_iteration iterations, or a TopK SAE with k = sparsity."""
    if method == "icfl":
        if atoms_per_iteration < 1 or sparsity % atoms_per_iteration != 0:
            raise ValueError(
                f"icfl: sparsity ({sparsity}) must be a positive multiple of "
                f"atoms_per_iteration ({atoms_per_iteration})"
            )
        return ICFL(
            input_dim, n_features, sparsity // atoms_per_iteration, atoms_per_iteration, seed
        )
    if method == "topk":
        return TopKSAE(input_dim, n_features, sparsity, aux_k=aux_k, seed=seed)
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


def decoder_directions(model: nn.Module) -> np.ndarray:
    """Decoder columns as a (d, M) float64 array with unit-norm columns."""
    W = model.W_dec.detach().cpu().to(torch.float64)
    return _unit_columns(W).numpy()


def _plain(value: Any) -> Any:
    """Meta values as plain Python types, so checkpoints load with ``weights_only=True``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def save_model(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Save weights and meta (caller's meta, overridden by the model's own constructor
    arguments) to ``path``, written under a temporary name then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": _plain({**dict(meta), **model.config()}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[ICFL | TopKSAE, dict[str, Any]]:
    """Load a model written by :func:`save_model`; returns (model, meta)."""
    path = Path(path)
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or not {"state_dict", "meta"} <= set(payload):
        raise ValueError(f"{path}: not a model file (expected keys 'state_dict' and 'meta')")
    meta = payload["meta"]
    missing = [k for k in ("method", "input_dim", "n_features", "sparsity") if k not in meta]
    if missing:
        raise ValueError(f"{path}: model meta lacks {missing}")
    model = build_model(
        meta["method"],
        meta["input_dim"],
        meta["n_features"],
        meta["sparsity"],
        atoms_per_iteration=meta.get("atoms_per_iteration", 5),
        aux_k=meta.get("aux_k"),
        seed=meta.get("seed", 0),
    )
    if isinstance(model, ICFL):
        model.resample_every = meta.get("resample_every", model.resample_every)
        model.resample_threshold = meta.get("resample_threshold", model.resample_threshold)
        model.learn_b_pre = meta.get("learn_b_pre", True)
    else:
        model.aux_coef = meta.get("aux_coef", model.aux_coef)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the model in its meta: {err}") from err
    return model.to(map_location), meta
