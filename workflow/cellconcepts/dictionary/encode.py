"""Encode a whole token store with a trained dictionary: sparse codes, reconstructions, cosines.

Tokens are streamed in fixed order with plain file reads; codes are assembled from per-batch CSR
blocks (never a dense (n, M) array) and reconstructions are mapped back to the original token space
and appended to a .npy file, so memory grows with the codes (n x nnz per token x 8 bytes), not with
the store.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cellconcepts.defaults import schema_default
from cellconcepts.device import resolve_device
from cellconcepts.files import NpyRowWriter, atomic_path
from cellconcepts.store.tokens import read_block

if TYPE_CHECKING:
    from cellconcepts.dictionary.whitening import Whitening

logger = logging.getLogger(__name__)


@dataclass
class EncodeResult:
    """Codes (n, M) CSR float32 and per-token reconstruction cosines (float64, in [-1, 1];
    0 where a vector is zero, e.g. a token equal to the control mean)."""

    codes: sp.csr_matrix
    cosine_model: np.ndarray  # transformed token vs reconstruction, model space
    cosine_original: np.ndarray  # token - control mean vs reconstruction - control mean


def _row_cosine(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.double(), b.double()
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    dots = (a * b).sum(1)
    cos = torch.where(norms > 0, dots / torch.where(norms > 0, norms, 1.0), 0.0)
    return cos.clamp(-1.0, 1.0)


class _CodeRows:
    """The codes of every token, appended batch by batch into preallocated CSR arrays (float32
    values, int32 columns) of ``n_tokens x max_nonzeros`` entries: memory is that of the codes
    once, never of a list of blocks plus their concatenation."""

    def __init__(self, n_tokens: int, n_features: int, max_nonzeros: int) -> None:
        self.shape = (n_tokens, n_features)
        self.data = np.empty(n_tokens * max_nonzeros, dtype=np.float32)
        self.indices = np.empty(n_tokens * max_nonzeros, dtype=np.int32)
        self.indptr = np.zeros(n_tokens + 1, dtype=np.int64)
        self.rows = self.nnz = 0

    def append(self, z: Tensor) -> None:
        """The non-zeros of a dense (b, M) code batch."""
        rows, cols = z.nonzero(as_tuple=True)
        stop = self.nnz + rows.shape[0]
        if stop > self.data.shape[0]:
            raise ValueError(
                f"codes have more non-zeros than the model's sparsity allows ({stop} > "
                f"{self.data.shape[0]})"
            )
        self.data[self.nnz : stop] = z[rows, cols].float().cpu().numpy()
        self.indices[self.nnz : stop] = cols.cpu().numpy()
        counts = torch.bincount(rows, minlength=z.shape[0]).cpu().numpy()
        self.indptr[self.rows + 1 : self.rows + 1 + z.shape[0]] = self.nnz + np.cumsum(counts)
        self.rows += z.shape[0]
        self.nnz = stop

    def matrix(self) -> sp.csr_matrix:
        """The CSR matrix of the rows appended (int32 row pointers where they fit, as scipy
        chooses them)."""
        indptr = self.indptr
        if self.nnz < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        return sp.csr_matrix(
            (self.data[: self.nnz], self.indices[: self.nnz], indptr), shape=self.shape
        )


def _check_shapes(model: nn.Module, tokens: np.ndarray, transform: Whitening | None) -> None:
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be a 2-d (n, d) array, got shape {tokens.shape}")
    d = tokens.shape[1]
    model_dim = model.W_dec.shape[0]
    expected = d if transform is None else transform.output_dim
    if transform is not None and transform.input_dim != d:
        raise ValueError(
            f"tokens have {d} dims but the whitening expects {transform.input_dim} input dims"
        )
    if expected != model_dim:
        raise ValueError(
            f"the model expects {model_dim}-dim inputs but the transformed tokens have {expected}"
        )


def _encode_batch(
    model: nn.Module, x: Tensor, transform: Whitening | None, mean: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(codes, reconstruction in the original space, cosine in model space, cosine in the
    original space around the control mean) of one batch."""
    if transform is None:
        y, norms = x, torch.ones(x.shape[0], device=x.device)
    else:
        y, norms = transform.transform_with_norms(x)
    z = model.encode(y)
    x_hat = model.decode(z)
    x_rec = x_hat if transform is None else transform.inverse_transform(x_hat, norms)
    cosine_original = _row_cosine(x.double() - mean, x_rec.double() - mean)
    return z, x_rec, _row_cosine(y, x_hat), cosine_original


def encode_tokens(
    model: nn.Module,
    tokens: np.ndarray,
    transform: Whitening | None,
    *,
    batch_size: int = schema_default("encode.batch_size"),
    device: str | torch.device = "auto",
    reconstruction_path: Path | None = None,
) -> EncodeResult:
    """Encode every row of ``tokens`` (n, d) after ``transform`` (None: tokens used as they are).

    Reconstructions (model space) are mapped back with ``transform.inverse_transform(x_hat,
    norms)`` and written as float32 (n, d) to ``reconstruction_path`` if given (under a temporary
    name, renamed when complete).
    """
    _check_shapes(model, tokens, transform)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, d = tokens.shape
    dev = resolve_device(device)
    model = model.to(dev).eval()
    mean = (
        torch.zeros(d, dtype=torch.float64, device=dev)
        if transform is None
        else torch.as_tensor(transform.mean, dtype=torch.float64, device=dev)
    )
    codes = _CodeRows(n, model.W_dec.shape[1], int(model.sparsity))
    cosine_model = np.empty(n, dtype=np.float64)
    cosine_original = np.empty(n, dtype=np.float64)
    with contextlib.ExitStack() as stack:
        recon = None
        if reconstruction_path is not None:
            Path(reconstruction_path).parent.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(atomic_path(reconstruction_path))
            recon = NpyRowWriter(stack.enter_context(open(tmp, "wb")), (n, d), np.float32)
        with torch.no_grad():
            for start in tqdm(range(0, n, batch_size), desc="encode", leave=False):
                stop = min(start + batch_size, n)
                x = torch.from_numpy(read_block(tokens, start, stop)).to(dev)
                z, x_rec, cos_model, cos_original = _encode_batch(model, x, transform, mean)
                codes.append(z)
                cosine_model[start:stop] = cos_model.cpu().numpy()
                cosine_original[start:stop] = cos_original.cpu().numpy()
                if recon is not None:
                    recon.write(x_rec.float().cpu().numpy())
        if recon is not None:
            recon.close()

    codes = codes.matrix()
    logger.info(
        "encoded %d tokens: mean nnz %.2f, mean cosine %.4f (model) %.4f (original)",
        n,
        codes.nnz / max(n, 1),
        float(cosine_model.mean()) if n else float("nan"),
        float(cosine_original.mean()) if n else float("nan"),
    )
    return EncodeResult(codes=codes, cosine_model=cosine_model, cosine_original=cosine_original)
