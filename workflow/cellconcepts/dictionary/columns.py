"""Decoder columns, one per feature: initialisation and unit-norm normalisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def unit_columns(w: Tensor) -> Tensor:
    """Columns of ``w`` scaled to unit norm (zero columns stay zero)."""
    return w / torch.linalg.vector_norm(w, dim=0, keepdim=True).clamp_min(1e-12)


def linear_init(input_dim: int, n_features: int, generator: torch.Generator) -> Tensor:
    """nn.Linear-style init of a (d, M) weight (kaiming uniform, a=sqrt(5)), unit-norm columns."""
    bound = 1.0 / math.sqrt(n_features)
    w = torch.empty(input_dim, n_features).uniform_(-bound, bound, generator=generator)
    return unit_columns(w)
