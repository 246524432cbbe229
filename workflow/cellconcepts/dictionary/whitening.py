"""Control whitening: centre on the control mean, PCA-scale by (lambda + eps)^-1/2, unit norm.

The transform is fitted on control rows only and is small (mean, eigenvectors, eigenvalues), so it
is saved on its own and applied per batch when tokens are read; a whitened copy of a store is
never written. All fitting maths is float64.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellconcepts.files import PathLike, atomic_path
from cellconcepts.store.tokens import iter_batches
from cellconcepts.variant import WHITENINGS

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Whitening:
    """A fitted whitening transform (see module docstring); ``method`` is "pca" or "none"."""

    method: str
    mean: np.ndarray
    components: np.ndarray | None
    eigenvalues: np.ndarray | None
    eps: float
    _torch_cache: dict[Any, tuple[torch.Tensor, ...]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.method not in WHITENINGS:
            raise ValueError(
                f"whitening method must be one of {list(WHITENINGS)}, got {self.method!r}"
            )
        self.mean = np.asarray(self.mean, dtype=np.float64)
        if self.method == "pca":
            if self.components is None or self.eigenvalues is None:
                raise ValueError("pca whitening needs components and eigenvalues")
            self.components = np.asarray(self.components, dtype=np.float64)
            self.eigenvalues = np.asarray(self.eigenvalues, dtype=np.float64)
            k = self.eigenvalues.shape[0]
            if self.components.shape != (self.mean.shape[0], k):
                raise ValueError(
                    f"components must have shape (d, k) = ({self.mean.shape[0]}, {k}), "
                    f"got {self.components.shape}"
                )
        else:
            self.components = None
            self.eigenvalues = None
        self.eps = float(self.eps)

    @property
    def input_dim(self) -> int:
        """Dimension d of the original token space."""
        return int(self.mean.shape[0])

    @property
    def output_dim(self) -> int:
        """Dimension of the whitened space: k for pca, d for none."""
        if self.method == "pca":
            return int(self.components.shape[1])
        return self.input_dim

    @property
    def scale(self) -> np.ndarray:
        """Per-component scale (eigenvalues + eps)^-1/2 (ones for "none")."""
        if self.method == "pca":
            return (self.eigenvalues + self.eps) ** -0.5
        return np.ones(self.input_dim)

    def _torch_params(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, components, scale) as tensors on ``device``, cached per (device, dtype)."""
        key = (str(device), dtype)
        if key not in self._torch_cache:
            components = self.components if self.method == "pca" else np.eye(self.input_dim)
            self._torch_cache[key] = tuple(
                torch.as_tensor(a, dtype=dtype, device=device)
                for a in (self.mean, components, self.scale)
            )
        return self._torch_cache[key]  # type: ignore[return-value]

    def _check_dim(self, x: np.ndarray | torch.Tensor, expected: int, what: str) -> None:
        if x.ndim not in (1, 2) or x.shape[-1] != expected:
            raise ValueError(
                f"{what}: expected shape (n, {expected}) for {self.method} whitening, "
                f"got {tuple(x.shape)}"
            )

    def transform_with_norms(
        self, x: np.ndarray | torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
        """Whiten rows of ``x``; return unit-norm rows and the row norms before normalising.

        Output type matches the input (numpy array, or torch tensor on the same device), float32.
        Zero rows (e.g. a row equal to the control mean) stay zero with norm 0.
        """
        self._check_dim(x, self.input_dim, "transform input")
        if isinstance(x, torch.Tensor):
            dtype = torch.float32 if x.device.type == "mps" else torch.float64
            mean, components, scale = self._torch_params(x.device, dtype)
            y = x.to(dtype) - mean
            if self.method == "pca":
                y = (y @ components) * scale
            norms = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
            y = y / torch.where(norms > 0, norms, torch.ones_like(norms))
            return y.to(torch.float32), norms.squeeze(-1).to(torch.float32)
        y = np.asarray(x, dtype=np.float64) - self.mean
        if self.method == "pca":
            y = (y @ self.components) * self.scale
        norms = np.linalg.norm(y, axis=-1, keepdims=True)
        y = y / np.where(norms > 0, norms, 1.0)
        return y.astype(np.float32), norms[..., 0].astype(np.float32)

    def transform(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Whiten rows of ``x`` to unit norm (same kind as ``x``, float32)."""
        return self.transform_with_norms(x)[0]

    def inverse_transform(
        self,
        y: np.ndarray | torch.Tensor,
        norms: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Map whitened rows back to the original space (same kind as ``y``, float32).

        ``norms`` are the row norms from :meth:`transform_with_norms` (1 when None). Exact inverse
        of the transform for rows in the retained subspace (all rows when k = d).
        """
        self._check_dim(y, self.output_dim, "inverse_transform input")
        if isinstance(y, torch.Tensor):
            dtype = torch.float32 if y.device.type == "mps" else torch.float64
            mean, components, scale = self._torch_params(y.device, dtype)
            x = y.to(dtype)
            if norms is not None:
                x = x * torch.as_tensor(norms, dtype=dtype, device=y.device).unsqueeze(-1)
            if self.method == "pca":
                x = (x / scale) @ components.T
            return (x + mean).to(torch.float32)
        x = np.asarray(y, dtype=np.float64)
        if norms is not None:
            x = x * np.asarray(norms, dtype=np.float64)[..., None]
        if self.method == "pca":
            x = (x / self.scale) @ self.components.T
        return (x + self.mean).astype(np.float32)

    def directions_to_input_space(self, directions: np.ndarray) -> np.ndarray:
        """Map whitened-space directions (k, M) to unit-norm original-space directions (d, M).

        A true atom a appears in the whitened space as S U^T a; this returns U U^T a (normalised),
        i.e. the atom projected on the retained components. Zero columns stay zero.
        """
        directions = np.asarray(directions, dtype=np.float64)
        if directions.ndim != 2 or directions.shape[0] != self.output_dim:
            raise ValueError(
                f"directions must have shape ({self.output_dim}, M), got {directions.shape}"
            )
        if self.method == "pca":
            mapped = self.components @ (directions / self.scale[:, None])
        else:
            mapped = directions.copy()
        norms = np.linalg.norm(mapped, axis=0, keepdims=True)
        return mapped / np.where(norms > 0, norms, 1.0)

    def directions_to_model_space(self, directions: np.ndarray) -> np.ndarray:
        """Map original-space directions (d, M) to unit-norm directions in the model's space (k, M).

        The linear part of `transform`: a true atom a is seen by the dictionary as S U^T a
        ("none": a itself). Comparing learned decoder columns with these is well conditioned;
        `directions_to_input_space` instead multiplies estimation error along suppressed
        (high-variance control) directions by up to sqrt(lambda_max / lambda_min).
        """
        directions = np.asarray(directions, dtype=np.float64)
        if directions.ndim != 2 or directions.shape[0] != self.input_dim:
            raise ValueError(
                f"directions must have shape ({self.input_dim}, M), got {directions.shape}"
            )
        if self.method == "pca":
            mapped = (self.components.T @ directions) * self.scale[:, None]
        else:
            mapped = directions.copy()
        norms = np.linalg.norm(mapped, axis=0, keepdims=True)
        return mapped / np.where(norms > 0, norms, 1.0)

    def pullback(self, directions: np.ndarray) -> np.ndarray:
        """Carry whitened-space directions (k, M) into the token space as unit columns (d, M).

        The returned direction v of a model-space direction w satisfies
        <v, x - mean> proportional to <w, S U^T (x - mean)>: it reads out of a centred token what
        the feature reads out of its whitened version (before unit norm). This is the direction
        to compare tokens with (token heatmaps); `directions_to_input_space` instead gives where
        a feature writes in the token space.
        """
        directions = np.asarray(directions, dtype=np.float64)
        if directions.ndim != 2 or directions.shape[0] != self.output_dim:
            raise ValueError(
                f"directions must have shape ({self.output_dim}, M), got {directions.shape}"
            )
        if self.method == "pca":
            mapped = self.components @ (directions * self.scale[:, None])
        else:
            mapped = directions.copy()
        norms = np.linalg.norm(mapped, axis=0, keepdims=True)
        return mapped / np.where(norms > 0, norms, 1.0)

    def save(self, path: PathLike) -> None:
        """Save to ``path`` (.npz), written under a temporary name then renamed."""
        path = Path(path)
        d = self.input_dim
        arrays = {
            "method": np.array(self.method),
            "mean": self.mean,
            "components": self.components if self.method == "pca" else np.empty((d, 0)),
            "eigenvalues": self.eigenvalues if self.method == "pca" else np.empty(0),
            "eps": np.array(self.eps),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: PathLike) -> Whitening:
        """Load a transform written by :meth:`save`."""
        path = Path(path)
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except Exception as err:
            raise ValueError(
                f"{path}: not a readable whitening file ({type(err).__name__}: {err})"
            ) from err
        with data:
            missing = [
                k for k in ("method", "mean", "components", "eigenvalues", "eps") if k not in data
            ]
            if missing:
                raise ValueError(f"{path}: not a whitening file, missing arrays {missing}")
            method = str(data["method"][()])
            return cls(
                method=method,
                mean=data["mean"],
                components=data["components"] if method == "pca" else None,
                eigenvalues=data["eigenvalues"] if method == "pca" else None,
                eps=float(data["eps"][()]),
            )


def _control_moments(
    tokens: np.ndarray, rows: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 mean and unbiased covariance of ``tokens[rows]``, streamed in batches.

    Batches are merged with Chan et al.'s pairwise update, which stays accurate when the mean is
    large relative to the spread (unlike raw sums of squares).
    """
    d = tokens.shape[1]
    count = 0
    mean = np.zeros(d)
    scatter = np.zeros((d, d))
    for _, batch in iter_batches(tokens, batch_size, indices=rows, desc="whitening fit"):
        batch = batch.astype(np.float64)
        n_b = batch.shape[0]
        mean_b = batch.mean(axis=0)
        centred = batch - mean_b
        delta = mean_b - mean
        total = count + n_b
        scatter += centred.T @ centred + np.outer(delta, delta) * (count * n_b / total)
        mean += delta * (n_b / total)
        count = total
    return mean, scatter / (count - 1)


def fit_whitening(
    tokens: np.ndarray,
    control_indices: np.ndarray,
    method: str = "pca",
    *,
    n_components: int | None = None,
    eps_relative: float = 1e-3,
    batch_size: int = 65536,
) -> Whitening:
    """Fit a whitening transform on the control rows of ``tokens``.

    ``control_indices`` are row indices (or a boolean mask). "pca" keeps ``n_components`` leading
    eigenvectors of the control covariance (default: all with eigenvalue > 1e-10 * max) and uses
    eps = eps_relative * mean(retained eigenvalues); "none" only centres. Needs >= 2 control rows.
    """
    if method not in WHITENINGS:
        raise ValueError(f"whitening method must be one of {list(WHITENINGS)}, got {method!r}")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D (n, d), got shape {tokens.shape}")
    rows = np.asarray(control_indices)
    rows = np.flatnonzero(rows) if rows.dtype == bool else np.unique(rows.astype(np.int64))
    if rows.size < 2:
        raise ValueError(f"whitening needs at least 2 control rows (is_control), got {rows.size}")
    d = tokens.shape[1]
    mean, cov = _control_moments(tokens, rows, batch_size)

    if method == "none":
        logger.info("Whitening 'none': centred on %d control rows", rows.size)
        return Whitening(method="none", mean=mean, components=None, eigenvalues=None, eps=0.0)

    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    eigenvectors = eigenvectors[:, order]
    if eigenvalues[0] <= 0:
        raise ValueError(f"the {rows.size} control rows are identical; cannot fit pca whitening")
    if n_components is None:
        k = int(np.sum(eigenvalues > 1e-10 * eigenvalues[0]))
    else:
        if not 1 <= n_components <= d:
            raise ValueError(f"n_components must be between 1 and {d}, got {n_components}")
        k = int(n_components)
    eigenvalues = eigenvalues[:k]
    components = eigenvectors[:, :k]
    # Fix each eigenvector's sign (largest-magnitude entry positive) so fits are reproducible.
    signs = np.sign(components[np.argmax(np.abs(components), axis=0), np.arange(k)])
    components = components * np.where(signs == 0, 1.0, signs)
    if k < d:
        logger.warning(
            "pca whitening keeps %d of %d dimensions: the %d control rows do not span the "
            "embedding space, and signal outside their span is dropped (add controls, or use "
            "whitening method 'none')",
            k,
            d,
            rows.size,
        )
    eps = float(eps_relative * eigenvalues.mean())
    logger.info(
        "Whitening 'pca' on %d control rows: kept %d of %d components, eps %.3g",
        rows.size,
        k,
        d,
        eps,
    )
    return Whitening(
        method="pca", mean=mean, components=components, eigenvalues=eigenvalues, eps=eps
    )
