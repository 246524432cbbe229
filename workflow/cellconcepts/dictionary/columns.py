"""Decoder columns, one per feature: initialisation, unit-norm normalisation, re-draws of
correlated columns, and the reconstruction from a few selected columns per token."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)


def unit_columns(w: Tensor) -> Tensor:
    """Columns of ``w`` scaled to unit norm (zero columns stay zero)."""
    return w / torch.linalg.vector_norm(w, dim=0, keepdim=True).clamp_min(1e-12)


def linear_init(input_dim: int, n_features: int, generator: torch.Generator) -> Tensor:
    """nn.Linear-style init of a (d, M) weight (kaiming uniform, a=sqrt(5)), unit-norm columns."""
    bound = 1.0 / math.sqrt(n_features)
    w = torch.empty(input_dim, n_features).uniform_(-bound, bound, generator=generator)
    return unit_columns(w)


def dense_codes(indices: Tensor, values: Tensor, n_features: int) -> Tensor:
    """(B, M) codes from each row's selected columns ``indices`` (B, k) and their weights
    ``values`` (B, k); a column selected twice in a row adds up. Differentiable in ``values``."""
    z = torch.zeros(indices.shape[0], n_features, dtype=values.dtype, device=values.device)
    return z.scatter_add(1, indices, values)


def sparse_products_on(device: torch.device, sparse: bool | None) -> bool:
    """Whether products with sparse codes are taken as gathers of the k selected columns
    (`decode_selected`, TopK's encoder gradient) rather than dense: ``sparse``, or for None
    on CPU only, the one device where both have been measured."""
    return device.type == "cpu" if sparse is None else bool(sparse)


def decode_selected(
    indices: Tensor, values: Tensor, W_dec: Tensor, sparse: bool | None = None
) -> Tensor:
    """``z @ W_dec^T`` (B, d) for the sparse codes z given as their selected columns
    ``indices`` (B, k) and weights ``values`` (B, k) (repeated indices add up, zero weights
    add nothing). Differentiable in ``values`` and ``W_dec``.

    On CPU the product is a weighted sum of k gathered columns per token (B k d multiply-adds
    instead of the dense B M d, and the same for the decoder's gradient): with the top-k
    selection and the backward it took 5.0 ms instead of 10.6 ms on one core at the demo's shape
    and 170 ms instead of 710 ms at the paper's, and 0.08 ms more at M = 128
    (benchmarks/sparse_decode.py). On other devices the dense product, whose speed there has
    been measured, is kept unless ``sparse`` says otherwise (`sparse_products_on`).
    """
    if not sparse_products_on(W_dec.device, sparse):
        return dense_codes(indices, values.to(W_dec.dtype), W_dec.shape[1]) @ W_dec.T
    return F.embedding_bag(
        indices, W_dec.T.contiguous(), per_sample_weights=values.to(W_dec.dtype), mode="sum"
    )


def active_entries(indices: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Which selections make a non-zero code: returns each row's selected columns in ascending
    order (B, k) and a mask (B, k) that is True at the first occurrence of every column whose
    weights in that row add up to a non-zero value. So ``mask.sum(1)`` is each row's number of
    non-zero codes and the columns under the mask are the active features, without forming the
    dense (B, M) codes."""
    order = indices.argsort(1)
    ordered = indices.gather(1, order)
    weights = values.detach().gather(1, order)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = first.long().cumsum(1) - 1
    totals = torch.zeros_like(weights).scatter_add_(1, run, weights)
    return ordered, first & (totals.gather(1, run) != 0)


def correlated_pairs(W_dec: Tensor, threshold: float, chunk: int = 2048) -> np.ndarray:
    """Pairs (i, j), i < j, of columns with cosine > threshold, as an (P, 2) int64 array in
    lexicographic order. The M x M cosine matrix is computed in row chunks to bound memory."""
    with torch.no_grad():
        W = unit_columns(W_dec.detach().float())
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


def redrawn_columns(pairs: np.ndarray, n_features: int, generator: torch.Generator) -> Tensor:
    """Which columns to re-draw for the correlated ``pairs`` (`correlated_pairs`): one of every
    pair, by a fair coin. Pairs are visited in lexicographic order and a pair is skipped once
    either column has been re-drawn in this round, so each column is re-drawn at most once and
    every group of near-duplicates keeps at least one member. Returns column indices (CPU, long)."""
    redrawn = np.zeros(n_features, dtype=bool)
    if len(pairs) == 0:
        return torch.empty(0, dtype=torch.long)
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
    return torch.from_numpy(np.flatnonzero(redrawn))


class Decoder:
    """The decoder ICFL and the TopK SAE share, mixed into both: x_hat = W_dec z + b_pre, the
    offset ``b_pre`` trained or held (`learn_b_pre`), and the upkeep of the decoder's columns
    after every optimiser step (unit norm, and every ``resample_every`` steps a re-draw of one
    column of every pair with cosine above ``resample_threshold``: Algorithm 1's training, an
    option for TopK). A model using it has parameters ``W_dec`` (d, M) and ``b_pre`` (d,) and
    sets ``resample_every`` (0: never), ``resample_threshold`` and ``last_resampled``."""

    W_dec: Tensor
    b_pre: Tensor
    resample_every: int
    resample_threshold: float
    last_resampled: Tensor
    # Products with the sparse codes as gathers (True), dense (False) or the device's choice
    # (None, `sparse_products_on`): the same numbers up to rounding, so not a setting;
    # benchmarks set it to compare.
    sparse_products: bool | None = None

    @property
    def learn_b_pre(self) -> bool:
        """Whether b_pre is trained (the paper's losses) or held at its value (False).

        With ICFL's stage-wise encoder, the fixed-code gradient lets b_pre drift along
        directions that atoms then absorb; on small problems this drift can undo a recovered
        dictionary.
        """
        return self.b_pre.requires_grad

    @learn_b_pre.setter
    def learn_b_pre(self, value: bool) -> None:
        self.b_pre.requires_grad_(bool(value))

    def decode(self, z: Tensor) -> Tensor:
        """x_hat = z @ W_dec^T + b_pre for dense codes z (B, M)."""
        return z @ self.W_dec.T + self.b_pre

    @torch.no_grad()
    def normalise(self) -> None:
        """Rescale decoder columns to unit norm."""
        self.W_dec.copy_(unit_columns(self.W_dec))

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
        """For every pair of columns with cosine > threshold, re-draw one of them
        (`redrawn_columns`) as a fresh uniformly random unit vector; the feature's other
        parameters follow (`_reset_features`). Returns the re-drawn column indices (CPU, long)."""
        pairs = correlated_pairs(self.W_dec, self.resample_threshold)
        index = redrawn_columns(pairs, self.W_dec.shape[1], generator)
        if index.numel() == 0:
            return index
        fresh = torch.randn(
            self.W_dec.shape[0], len(index), generator=generator, dtype=torch.float64
        )
        fresh = unit_columns(fresh).to(device=self.W_dec.device, dtype=self.W_dec.dtype)
        self.W_dec[:, index.to(self.W_dec.device)] = fresh
        self._reset_features(index.to(self.W_dec.device), fresh)
        logger.debug("re-drew %d correlated decoder columns", len(index))
        return index

    def _reset_features(self, index: Tensor, fresh: Tensor) -> None:
        """Reset what else belongs to the re-drawn features ``index`` (decoder columns now
        ``fresh``, (d, len(index))): nothing for a decoder-only model."""
