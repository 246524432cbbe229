"""Decoder columns, one per feature: initialisation, unit-norm normalisation, and the
reconstruction from a few selected columns per token."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


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


def decode_selected(indices: Tensor, values: Tensor, W_dec: Tensor) -> Tensor:
    """``z @ W_dec^T`` (B, d) for the sparse codes z given as their selected columns
    ``indices`` (B, k) and weights ``values`` (B, k) (repeated indices add up, zero weights
    add nothing). Differentiable in ``values`` and ``W_dec``.

    On CPU the product is a weighted sum of k gathered columns per token (B k d multiply-adds
    instead of the dense B M d, and the same for the decoder's gradient): with the top-k
    selection and the backward it took 5.0 ms instead of 10.6 ms on one core at the demo's shape
    and 170 ms instead of 710 ms at the paper's, and 0.08 ms more at M = 128
    (benchmarks/sparse_decode.py). On other devices the dense product, whose speed there has
    been measured, is kept.
    """
    if W_dec.device.type != "cpu":
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
