"""ICFL (Donhauser et al. 2025): the batched-OMP encoder of Algorithm 1 and a decoder learned by
gradient descent on codes held fixed.

The model works on already-transformed tokens (control-centred or PCA-whitened, unit norm),
float32, on any device. The decoder ``W_dec`` is (d, M) with unit-norm columns (one per feature)
and ``b_pre`` (d,) is an offset subtracted before encoding and added after decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from cellconcepts.dictionary.columns import (
    Decoder,
    decode_selected,
    dense_codes,
    linear_init,
)
from cellconcepts.dictionary.settings import ICFLSettings, as_meta

# Relative ridge added to the L x L Gram of the selected atoms (scaled by its mean diagonal):
# small enough not to bias well-conditioned solves, large enough that nearly collinear selections
# stay finite.
_RIDGE = {torch.float64: 1e-10, torch.float32: 1e-5}


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


# Tokens whose correlations the Gram path computes in one product: bounds the (chunk, M) it keeps.
_GRAM_CHUNK = 8192
# Bytes of correlations iterated together on CPU (at least 64 tokens): they stay in cache across
# the J iterations, which halves the encoder's time at the paper's shape (64 tokens x M = 8192),
# while at small M larger blocks spare per-call overheads (1,024 tokens at M = 512: 8.9 ms instead
# of 15.2 ms for the demo's batch; benchmarks/README.md). On a GPU the whole chunk is iterated at
# once. With several intra-op threads and at least `_BLOCKS_PER_THREAD` blocks per thread, the
# blocks are shared among that many single-threaded Python threads (every op releases the GIL):
# the sparse update runs on one thread per call, and a small block's other ops gain little from
# intra-op threads (the paper's shape, 64-token blocks, batch 8192, 2 threads: ICFL / TopK per
# training step 2.78-2.85 -> 2.14-2.33; benchmarks/README.md, train_step.py). Fewer, larger
# blocks gain more from the ops' own threads: at the demo's shape (two blocks of 1,024 tokens) a
# pool made the training step slower in a development run (15.6 -> 21.5 ms).
_CPU_ITERATION_BYTES = 2 * 1024 * 1024
_BLOCKS_PER_THREAD = 4
ENCODERS = ("auto", "gram", "residual")
# How the Gram path subtracts G[:, S] z_t from the correlations: "sparse", a sparse-COO times
# dense product (one axpy per selected atom, in place; the CPU's, cache-friendly), or "gather",
# the weighted sum of the L selected rows of G per token as one fused gather
# (`embedding_bag`, no sparse format; the CUDA's). Both are exact; they round differently.
GRAM_UPDATES = ("sparse", "gather")
# How each iteration picks its L atoms: "signed", the L largest <W_m, r> (Algorithm 1 of the
# paper), or "absolute", the L largest |<W_m, r>| (classic OMP's rule, applied L at a time).
SELECTIONS = ("signed", "absolute")


def _check_encoder_args(
    x: Tensor, W_dec: Tensor, n_iterations: int, atoms_per_iteration: int
) -> None:
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


# Cost of one element of the Gram path's sparse update (a gathered multiply-add, bound by
# memory) relative to one multiply-add of a dense matrix product. Measured on one CPU core with
# benchmarks/icfl_encoder.py over 10 shapes from the demo's to the paper's (2026-11-30, blocks
# of `_CPU_ITERATION_BYTES`): it ranged from 5 (d = 64, M = 512, J = 2, L = 4) to 23 (d = 96,
# M = 128, where fixed costs dominate); 12 is their middle. It misjudged one shape (d = 64,
# M = 512, J = 2, L = 4), whose Gram path was 11-29 % faster in two runs.
SPARSE_UPDATE_COST = 12.0


def gram_is_cheaper(
    batch: int,
    dim: int,
    n_features: int,
    n_iterations: int,
    atoms_per_iteration: int = 1,
    device_type: str = "cpu",
) -> bool:
    """Whether the Gram path should take less time than the residual path for one call.

    Residual: J x (B d M) dense multiply-adds for the correlations of every iteration. Gram:
    d M^2 / 2 for G = W^T W (its upper half), B d M for the first correlations, and J x (B L M)
    sparse updates, each weighed by `SPARSE_UPDATE_COST`. On CUDA the residual path: on an
    H200 it was the faster one at all 8 shapes of benchmarks/icfl_encoder.py, from the demo's
    to the paper's (the Gram path took 1.08-1.81x as long; dense products are what a GPU does
    best, the gathers of the sparse update are not).
    """
    if device_type == "cuda":
        return False
    residual = n_iterations * batch * dim * n_features
    gram = (
        dim * n_features * n_features / 2
        + batch * dim * n_features
        + SPARSE_UPDATE_COST * n_iterations * batch * atoms_per_iteration * n_features
    )
    return gram < residual


def decoder_gram(W_dec: Tensor, block: int = 256) -> Tensor:
    """G = W^T W (M, M) of the decoder's columns. Only the blocks on and above the diagonal
    are multiplied (G is symmetric) and mirrored, which roughly halves the d M^2 cost; no
    temporary larger than one block is allocated."""
    W = W_dec.detach()
    n = W.shape[1]
    gram = torch.empty(n, n, dtype=W.dtype, device=W.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        upper = W[:, start:stop].T @ W[:, start:]  # rows start:stop, columns start:
        gram[start:stop, start:] = upper
        gram[stop:, start:stop] = upper[:, stop - start :].T
    return gram


def icfl_encode(
    x: Tensor,
    W_dec: Tensor,
    b_pre: Tensor,
    n_iterations: int,
    atoms_per_iteration: int,
    *,
    method: str = "auto",
    gram: Tensor | None = None,
    selection: str = ICFLSettings.selection,
    gram_update: str | None = None,
) -> Tensor:
    """ICFL encoder (Algorithm 1, batched OMP) for rows of ``x`` (B, d); dense codes (B, M).

    r = x - b_pre; J times: S = the L columns with the largest *signed* <W_m, r> (``selection``
    "absolute": the largest |<W_m, r>|, OMP's rule); least squares of r on W_dec[:, S] only;
    r -= W_S z_t; z[S] += z_t. Codes may be negative and have at most J*L non-zeros per row. No
    gradient flows through the encoder.

    Two exact implementations (``method``): "residual" keeps r and recomputes W^T r every
    iteration; "gram" (Batch-OMP, Rubinstein et al. 2008, adapted to the stage-wise selection)
    computes c = W^T (x - b_pre) once and updates it with c -= G[:, S] z_t, G = W^T W (given as
    ``gram`` or computed here), never forming r. "auto" takes the one `gram_is_cheaper` names.
    ``gram_update`` picks the Gram path's update (`GRAM_UPDATES`); None: "sparse" on CPU,
    "gather" elsewhere.
    """
    indices, values = icfl_select(
        x,
        W_dec,
        b_pre,
        n_iterations,
        atoms_per_iteration,
        method=method,
        gram=gram,
        selection=selection,
        gram_update=gram_update,
    )
    return dense_codes(indices, values, W_dec.shape[1]).to(x.dtype)


def icfl_select(
    x: Tensor,
    W_dec: Tensor,
    b_pre: Tensor,
    n_iterations: int,
    atoms_per_iteration: int,
    *,
    method: str = "auto",
    gram: Tensor | None = None,
    selection: str = ICFLSettings.selection,
    gram_update: str | None = None,
) -> tuple[Tensor, Tensor]:
    """The encoder of `icfl_encode` as its selections: ``indices`` (B, J*L), the atoms chosen
    in iteration order, and ``values`` (B, J*L), the coefficient each choice added (float64
    for float64 input, else float32)."""
    _check_encoder_args(x, W_dec, n_iterations, atoms_per_iteration)
    if method not in ENCODERS:
        raise ValueError(f"icfl_encode: method must be one of {ENCODERS}, got {method!r}")
    if selection not in SELECTIONS:
        raise ValueError(f"icfl_encode: selection must be one of {SELECTIONS}, got {selection!r}")
    if gram_update is None:
        gram_update = "sparse" if x.device.type == "cpu" else "gather"
    if gram_update not in GRAM_UPDATES:
        raise ValueError(
            f"icfl_encode: gram_update must be one of {GRAM_UPDATES}, got {gram_update!r}"
        )
    if method == "auto":
        cheaper = gram is not None or gram_is_cheaper(
            x.shape[0],
            W_dec.shape[0],
            W_dec.shape[1],
            n_iterations,
            atoms_per_iteration,
            x.device.type,
        )
        method = "gram" if cheaper else "residual"
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        W = W_dec.detach().to(dtype)
        centred = x.detach().to(dtype) - b_pre.detach().to(dtype)
        if method == "residual":
            return _encode_residual(centred, W, n_iterations, atoms_per_iteration, selection)
        G = decoder_gram(W) if gram is None else gram.detach().to(dtype)
        iterate = _GramIterations(G, n_iterations, atoms_per_iteration, selection, gram_update)
        return _encode_gram(centred, W, iterate)


def _select(scores: Tensor, L: int, selection: str) -> tuple[Tensor, Tensor]:
    """(indices, signed scores) of the L atoms an iteration takes (`SELECTIONS`)."""
    if selection == "signed":
        top = torch.topk(scores, L, dim=1, sorted=False)
        return top.indices, top.values
    indices = torch.topk(scores.abs(), L, dim=1, sorted=False).indices
    return indices, scores.gather(1, indices)


def _encode_residual(
    r: Tensor, W: Tensor, n_iterations: int, L: int, selection: str = ICFLSettings.selection
) -> tuple[Tensor, Tensor]:
    """Algorithm 1 as written: the residual r (B, d) is kept and re-projected every iteration.
    Returns the selections (indices, coefficients), (B, J*L) each."""
    Wt = W.T.contiguous()  # (M, d): row m is atom m, for gathering
    chosen, coefficients = [], []
    for _ in range(n_iterations):
        indices, values = _select(r @ W, L, selection)
        atoms = Wt[indices]  # (B, L, d)
        gram = atoms @ atoms.transpose(1, 2)
        # The right-hand side W_S^T r is exactly the selected scores.
        z_t = _solve_small_spd(gram, values)
        r = r - (z_t.unsqueeze(1) @ atoms).squeeze(1)
        chosen.append(indices)
        coefficients.append(z_t)
    return torch.cat(chosen, 1), torch.cat(coefficients, 1)


def _encode_gram(centred: Tensor, W: Tensor, iterate: _GramIterations) -> tuple[Tensor, Tensor]:
    """Algorithm 1 on the correlations c = W^T r: c -= G[:, S] z_t replaces r -= W_S z_t.
    Returns the selections (indices, coefficients), (B, J*L) each.

    On CPU the tokens go in cache-sized blocks, spread over torch's threads; each block's
    arithmetic is the same whatever the number of threads."""
    shape = (centred.shape[0], iterate.n_iterations * iterate.L)
    indices = torch.empty(shape, dtype=torch.long, device=centred.device)
    values = torch.empty(shape, dtype=centred.dtype, device=centred.device)

    def block(c: Tensor, rows: slice) -> None:
        indices[rows], values[rows] = iterate(c)

    for start in range(0, centred.shape[0], _GRAM_CHUNK):
        stop = min(start + _GRAM_CHUNK, centred.shape[0])
        correlations = centred[start:stop] @ W  # (chunk, M)
        if correlations.device.type != "cpu":
            block(correlations, slice(start, stop))
            continue
        step = max(64, _CPU_ITERATION_BYTES // correlations[0].nbytes)
        blocks = [
            (
                correlations[first : first + step],
                slice(start + first, min(start + first + step, stop)),
            )
            for first in range(0, stop - start, step)
        ]
        threads = torch.get_num_threads()
        if (
            threads == 1
            or len(blocks) < _BLOCKS_PER_THREAD * threads
            or torch.autograd._profiler_enabled()  # it would not see the pool's threads
        ):
            for c, rows in blocks:
                block(c, rows)
        else:
            _on_threads(block, blocks, threads)
    return indices, values


def _on_threads(
    block: Callable[[Tensor, slice], None], arguments: list[tuple[Tensor, slice]], threads: int
) -> None:
    """``block(*a)`` for every ``a`` of ``arguments`` on ``threads`` Python threads, each
    single-threaded in torch (``threads`` cores in all, not threads^2) and in the caller's
    gradient and inference modes; torch's thread count is restored afterwards."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def work(c: Tensor, rows: slice) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            block(c, rows)

    try:
        with ThreadPoolExecutor(
            threads, thread_name_prefix="icfl", initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            for done in [pool.submit(work, *a) for a in arguments]:
                done.result()
    finally:
        torch.set_num_threads(threads)


class _GramIterations:
    """The J selections and solves of Algorithm 1 for a block of correlations (b, M), updated
    in place with ``update`` (`GRAM_UPDATES`)."""

    def __init__(self, G: Tensor, n_iterations: int, L: int, selection: str, update: str) -> None:
        self.G, self.n_iterations, self.L = G, n_iterations, L
        self.selection, self.update = selection, update

    def __call__(self, c: Tensor) -> tuple[Tensor, Tensor]:
        G, L = self.G, self.L
        tokens = torch.arange(c.shape[0], device=c.device).repeat_interleave(L)
        chosen, coefficients = [], []
        for _ in range(self.n_iterations):
            selected, values = _select(c, L, self.selection)
            gram = G[selected[:, :, None], selected[:, None, :]]  # (b, L, L) = G[S, S]
            z_t = _solve_small_spd(gram, values)
            if self.update == "gather":
                c.sub_(nn.functional.embedding_bag(selected, G, per_sample_weights=z_t, mode="sum"))
            else:  # G is symmetric: the sparse product reads rows of G, never copies them
                update = torch.sparse_coo_tensor(
                    torch.stack([tokens, selected.reshape(-1)]),
                    z_t.reshape(-1),
                    c.shape,
                    check_invariants=False,
                )
                c.addmm_(update, G, alpha=-1)
            chosen.append(selected)
            coefficients.append(z_t)
        return torch.cat(chosen, 1), torch.cat(coefficients, 1)


class ICFL(Decoder, nn.Module):
    """Iterative codebook feature learning: OMP-encoded codes, decoder learned by gradient descent.

    Only ``W_dec`` and ``b_pre`` are parameters; codes come from :func:`icfl_encode` and are held
    fixed during the decoder update. ``sparsity`` = J * L non-zeros per code, L being
    ``settings.atoms_per_iteration``; ``settings`` default to the config schema's.
    """

    method = "icfl"

    def __init__(
        self,
        input_dim: int,
        n_features: int,
        sparsity: int,
        settings: ICFLSettings | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        settings = ICFLSettings() if settings is None else settings
        if not isinstance(settings, ICFLSettings):
            raise TypeError(f"ICFL: settings must be ICFLSettings, got {type(settings).__name__}")
        if input_dim < 1 or n_features < 1:
            raise ValueError(
                f"ICFL: input_dim and n_features must be >= 1, got {input_dim}, {n_features}"
            )
        L = settings.atoms_per_iteration
        if not 1 <= L <= n_features or sparsity < L or sparsity % L != 0:
            raise ValueError(
                f"icfl: sparsity ({sparsity}) must be a positive multiple of "
                f"atoms_per_iteration ({L}), which must be in [1, n_features = {n_features}]"
            )
        if settings.selection not in SELECTIONS:
            raise ValueError(
                f"ICFL: selection must be one of {SELECTIONS}, got {settings.selection!r}"
            )
        self.settings = settings
        self.selection = settings.selection
        self.input_dim = input_dim
        self.n_features = n_features
        self.n_iterations = sparsity // L
        self.atoms_per_iteration = L
        self.seed = seed
        self.resample_every = settings.resample_every
        self.resample_threshold = settings.resample_threshold
        generator = torch.Generator().manual_seed(seed)
        self.W_dec = nn.Parameter(linear_init(input_dim, n_features, generator))
        self.b_pre = nn.Parameter(torch.zeros(input_dim))
        self.learn_b_pre = settings.learn_b_pre
        self.last_resampled = torch.empty(0, dtype=torch.long)
        self._gram_matrix: Tensor | None = None
        self._gram_key: tuple | None = None
        # The encoder's implementation (`ENCODERS`, `GRAM_UPDATES`): they choose the same atoms
        # and round differently, so they are not settings; benchmarks set them to compare.
        self.encoder = "auto"
        self.gram_update: str | None = None

    @property
    def sparsity(self) -> int:
        """Maximum number of non-zeros per code, J * L."""
        return self.n_iterations * self.atoms_per_iteration

    def config(self) -> dict[str, Any]:
        """Constructor arguments and settings, for :func:`save_model`."""
        return {
            "method": self.method,
            "input_dim": self.input_dim,
            "n_features": self.n_features,
            "sparsity": self.sparsity,
            "n_iterations": self.n_iterations,
            "seed": self.seed,
            **as_meta(self.settings),
        }

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes (B, M) from the OMP encoder (no gradient), in the Gram form when that is
        cheaper (`gram_is_cheaper`; the attribute ``encoder`` forces a path); G = W^T W is kept
        until the decoder changes, so it is computed once per training step and once for a
        whole encoding pass."""
        return dense_codes(*self.select(x), self.n_features).to(x.dtype)

    def select(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's selections (indices, coefficients), (B, J*L) each (`icfl_select`)."""
        gram = self._gram(x.shape[0])
        return icfl_select(
            x,
            self.W_dec,
            self.b_pre,
            self.n_iterations,
            self.atoms_per_iteration,
            method="residual" if gram is None else "gram",
            gram=gram,
            selection=self.selection,
            gram_update=self.gram_update,
        )

    def _gram(self, batch: int) -> Tensor | None:
        """The decoder's Gram matrix, cached under the decoder's version (in-place optimiser
        steps, renormalisation and re-draws all bump it); None when the encoder is the residual
        path (``encoder``, or for "auto" when it is cheaper for this batch size)."""
        if self.encoder not in ENCODERS:
            raise ValueError(f"ICFL: encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "residual":
            self._gram_matrix = self._gram_key = None
            return None
        W = self.W_dec
        key = (W._version, W.data_ptr(), W.dtype, W.device)
        if self._gram_key == key:
            return self._gram_matrix
        if self.encoder == "auto" and not gram_is_cheaper(
            batch,
            self.input_dim,
            self.n_features,
            self.n_iterations,
            self.atoms_per_iteration,
            W.device.type,
        ):
            return None
        self._gram_matrix, self._gram_key = decoder_gram(W), key
        return self._gram_matrix

    def loss(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, z, x_hat): mean over rows of the squared error summed over dims; z detached."""
        loss, indices, values, x_hat = self.selected_loss(x)
        return loss, dense_codes(indices, values, self.n_features).to(x.dtype), x_hat

    def selected_loss(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The loss of `loss` with the codes as the encoder's selections: (loss, indices,
        values, x_hat), indices and values (B, J*L). Training uses this form: it never needs
        the dense (B, M) codes."""
        indices, values = self.select(x)
        x_hat = decode_selected(indices, values, self.W_dec, self.sparse_products) + self.b_pre
        loss = (x - x_hat).pow(2).sum(-1).mean()
        return loss, indices, values, x_hat
