"""The TopK sparse autoencoder baseline (Gao et al. 2024), with optional AuxK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cellconcepts.dictionary.columns import (
    Decoder,
    decode_selected,
    dense_codes,
    linear_init,
    sparse_products_on,
)
from cellconcepts.dictionary.settings import TopKSettings, as_meta


class TopKSAE(Decoder, nn.Module):
    """TopK sparse autoencoder (Gao et al. 2024): z = ReLU(TopK(W_enc (x - b_pre) + b_enc)).

    AuxK (reconstruct the residual from the top ``aux_k`` dead latents) is off unless ``aux_k``
    is set and :meth:`loss` is given a dead mask. ``learn_b_pre`` False holds b_pre at 0;
    ``resample_every`` > 0 re-draws correlated decoder columns as ICFL does (`Decoder`), and
    the re-drawn features' encoder rows with them. ``settings`` default to the config schema's.
    """

    method = "topk"

    def __init__(
        self,
        input_dim: int,
        n_features: int,
        k: int,
        settings: TopKSettings | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        settings = TopKSettings() if settings is None else settings
        if not isinstance(settings, TopKSettings):
            raise TypeError(
                f"TopKSAE: settings must be TopKSettings, got {type(settings).__name__}"
            )
        aux_k = settings.aux_k
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
        self.settings = settings
        self.aux_k = aux_k
        self.aux_coef = settings.aux_coef
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        W_dec = linear_init(input_dim, n_features, generator)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_pre = nn.Parameter(torch.zeros(input_dim))
        self.learn_b_pre = settings.learn_b_pre
        self.resample_every = settings.resample_every
        self.resample_threshold = settings.resample_threshold
        self.last_resampled = torch.empty(0, dtype=torch.long)
        self.last_aux_loss: Tensor | None = None

    @property
    def sparsity(self) -> int:
        """Number of active latents per token, k."""
        return self.k

    def config(self) -> dict[str, Any]:
        """Constructor arguments and settings, for :func:`save_model`."""
        return {
            "method": self.method,
            "input_dim": self.input_dim,
            "n_features": self.n_features,
            "sparsity": self.k,
            "seed": self.seed,
            **as_meta(self.settings),
        }

    def pre_activations(self, x: Tensor) -> Tensor:
        """W_enc (x - b_pre) + b_enc, (B, M), computed as W_enc x + (b_enc - W_enc b_pre): the
        gradient for b_pre then needs no (B, M) x (M, d) product (6.4 ms instead of 8.3 ms for
        the encoder's forward, top-k and backward at the demo's shape, 445 instead of 586 ms at
        the paper's, one core)."""
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"TopKSAE: x must have shape (B, {self.input_dim}), got {tuple(x.shape)}"
            )
        return torch.addmm(self.b_enc - self.W_enc @ self.b_pre, x, self.W_enc.T)

    @staticmethod
    def _topk_relu(pre: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """(indices (B, k), values (B, k), dense codes (B, M)) of ReLU(TopK(pre))."""
        top = torch.topk(pre, k, dim=-1, sorted=False)
        values = F.relu(top.values)
        return top.indices, values, torch.zeros_like(pre).scatter(-1, top.indices, values)

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes (B, M), at most k non-zero per row, non-negative, differentiable."""
        return self._topk_relu(self.pre_activations(x), self.k)[2]

    def loss(self, x: Tensor, dead_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, z, x_hat). Loss: mean over rows of the squared error summed over dims, plus
        ``aux_coef`` * AuxK when ``aux_k`` is set and ``dead_mask`` (M,) marks dead latents."""
        loss, indices, values, x_hat = self.selected_loss(x, dead_mask)
        return loss, dense_codes(indices, values, self.n_features), x_hat

    def selected_loss(
        self, x: Tensor, dead_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The loss of `loss` with the codes as their selections: (loss, indices, values,
        x_hat), indices and values (B, k). Training uses this form: it never needs the dense
        (B, M) codes, and on CPU neither does the encoder's gradient (`_SelectedPreActivations`)."""
        pre, select = self._pre_activations_for_selection(x)
        indices = torch.topk(pre, self.k, dim=-1, sorted=False).indices
        values = F.relu(select(indices))
        x_hat = decode_selected(indices, values, self.W_dec, self.sparse_products) + self.b_pre
        error = x - x_hat
        loss = error.pow(2).sum(-1).mean()
        self.last_aux_loss = None
        if self.aux_k is not None and dead_mask is not None:
            dead_mask = dead_mask.to(device=pre.device, dtype=torch.bool)
            n_dead = int(dead_mask.sum())
            if n_dead > 0:
                masked = pre.detach().masked_fill(~dead_mask, float("-inf"))
                aux_indices = torch.topk(masked, min(self.aux_k, n_dead), dim=-1).indices
                aux = self._aux_loss(aux_indices, F.relu(select(aux_indices)), error.detach())
                self.last_aux_loss = aux.detach()
                loss = loss + self.aux_coef * aux
        return loss, indices, values, x_hat

    def _pre_activations_for_selection(
        self, x: Tensor
    ) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """The pre-activations (B, M), and a function that returns their entries at given
        indices (B, j), differentiable in the encoder's parameters. On CPU the pre-activations
        are computed without gradient and the entries carry it alone (encoder forward, top-k and
        backward 4.6 instead of 5.9 ms at the demo's shape, 267 instead of 451 ms at the paper's,
        one core); elsewhere the dense pre-activations carry it (`sparse_products` chooses
        otherwise)."""
        if not sparse_products_on(x.device, self.sparse_products):
            pre = self.pre_activations(x)
            return pre, lambda indices: pre.gather(1, indices)
        with torch.no_grad():
            pre = self.pre_activations(x)
        parameters = (self.W_enc, self.b_enc, self.b_pre)
        return pre, lambda indices: _SelectedPreActivations.apply(pre, indices, x, *parameters)

    def _aux_loss(self, indices: Tensor, values: Tensor, residual: Tensor) -> Tensor:
        """AuxK: reconstruct the residual with the top-k_aux dead latents (their ``indices``
        and ReLU'd ``values``), normalised by the residual's variance (Gao et al. 2024,
        appendix A.2)."""
        residual_hat = decode_selected(indices, values, self.W_dec, self.sparse_products)
        mse = (residual_hat - residual).pow(2).sum(-1).mean()
        variance = (residual - residual.mean(0)).pow(2).sum(-1).mean()
        return torch.nan_to_num(mse / variance.clamp_min(1e-12), nan=0.0)

    def _reset_features(self, index: Tensor, fresh: Tensor) -> None:
        """A re-drawn feature starts as at initialisation: its encoder row is its new decoder
        column and its encoder bias 0 (the training loop resets their optimiser state)."""
        self.W_enc[index] = fresh.T
        self.b_enc[index] = 0.0


class _SelectedPreActivations(torch.autograd.Function):
    """Entries ``pre[b, indices[b, j]]`` of TopK's pre-activations W_enc x + b_enc - W_enc b_pre,
    with the gradient of W_enc, b_enc and b_pre through those entries alone: the backward
    multiplies the (B, j) gradient as a sparse matrix (B j d multiply-adds) where autograd of
    the dense pre-activations would form a (B, M) gradient and multiply it densely (B M d)."""

    @staticmethod
    def forward(
        ctx: Any,
        pre: Tensor,
        indices: Tensor,
        x: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        b_pre: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(indices, x, W_enc, b_pre)
        return pre.gather(1, indices)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        indices, x, W_enc, b_pre = ctx.saved_tensors
        n_features, batch = W_enc.shape[0], indices.shape[0]
        columns = indices.reshape(-1)
        weights = grad.reshape(-1).to(W_enc.dtype)
        grad_b_enc = torch.zeros(n_features, dtype=W_enc.dtype, device=W_enc.device)
        grad_b_enc.index_add_(0, columns, weights)
        rows = torch.arange(batch, device=indices.device).repeat_interleave(indices.shape[1])
        by_feature = torch.sparse_coo_tensor(
            torch.stack([columns, rows]), weights, (n_features, batch), check_invariants=False
        )
        grad_W_enc = torch.sparse.mm(by_feature, x.to(W_enc.dtype)) - torch.outer(grad_b_enc, b_pre)
        grad_b_pre = -(grad_b_enc @ W_enc)
        return None, None, None, grad_W_enc, grad_b_enc, grad_b_pre
