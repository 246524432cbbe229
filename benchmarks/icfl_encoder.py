"""Time the ICFL encoder alone: its residual and Gram (Batch-OMP) paths side by side, and
scikit-learn's orthogonal_mp_gram at the same number of non-zeros per token.

    python benchmarks/icfl_encoder.py                       # a grid from the demo to the paper
    python benchmarks/icfl_encoder.py --shapes 1024,1024,8192,20,5 --omp-tokens 64
    python benchmarks/icfl_encoder.py --device cuda         # the same grid on a GPU
    python benchmarks/icfl_encoder.py --device cuda --compare-cpu   # and the atoms against CPU

Each shape is batch,dim,features,J,L. The Gram path's time includes computing G = W^T W once
(as in one training step). OMP re-solves the least squares of all selected atoms at every
step (Rubinstein et al.'s Batch-OMP), ICFL solves only the L new ones per iteration (Algorithm
1), so they select different supports; the comparison is of cost at equal sparsity. Prints
seconds per call, tokens per second, the ratios, and the decision of `gram_is_cheaper`.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from cellconcepts.device import resolve_device
from cellconcepts.dictionary.icfl import decoder_gram, gram_is_cheaper, icfl_encode

GRID = [
    (256, 32, 128, 2, 2),  # pbmc, k=4
    (256, 32, 128, 8, 2),  # pbmc, k=16
    (256, 96, 128, 4, 2),  # cellpainting
    (2048, 64, 512, 4, 2),  # synthetic demo
    (4096, 256, 2048, 4, 5),
    (1024, 1024, 8192, 4, 5),
    (1024, 1024, 8192, 20, 5),  # the paper's shape, CPU batch
]


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(function, repeats: int) -> float:
    function()  # warm-up
    _synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    _synchronize()
    return (time.perf_counter() - start) / repeats


def _inputs(batch: int, dim: int, features: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    W = torch.nn.functional.normalize(torch.randn(dim, features, generator=generator), dim=0)
    x = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    return x.to(device), W.to(device), torch.zeros(dim, device=device)


def _residual(x, W, b, J: int, L: int) -> torch.Tensor:
    return icfl_encode(x, W, b, J, L, method="residual")


def _gram(x, W, b, J: int, L: int) -> torch.Tensor:
    """The Gram path as a training step runs it: G computed, then the encoder."""
    return icfl_encode(x, W, b, J, L, method="gram", gram=decoder_gram(W))


def _omp_seconds_per_token(x, W, k: int, tokens: int) -> float:
    from sklearn.linear_model import orthogonal_mp_gram

    gram = (W.T @ W).double().cpu().numpy()
    xy = (x[:tokens] @ W).double().cpu().numpy().T  # (M, tokens)
    return _timed(lambda: orthogonal_mp_gram(gram, xy, n_nonzero_coefs=k), 1) / tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", help="batch,dim,features,J,L (default: a grid)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--omp-tokens", type=int, default=0, help="tokens timed with sklearn OMP")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--compare-cpu",
        action="store_true",
        help="also the share of tokens whose atoms each path on the device chooses exactly as the "
        "CPU's Gram path (float32, the same inputs)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else GRID
    device = resolve_device(args.device)
    print(f"device={device} threads={torch.get_num_threads()}")
    header = "batch   dim  feats  J  L   residual s   gram s  gram/res  model picks"
    print(
        header
        + ("   omp s/token  icfl s/token  omp/icfl" if args.omp_tokens else "")
        + ("   same atoms as CPU: residual  gram" if args.compare_cpu else "")
    )
    for batch, dim, features, J, L in shapes:
        x, W, b = _inputs(batch, dim, features, device)
        residual = _timed(partial(_residual, x, W, b, J, L), args.repeats)
        gram = _timed(partial(_gram, x, W, b, J, L), args.repeats)
        cheaper = gram_is_cheaper(batch, dim, features, J, L, device.type)
        picks = "gram" if cheaper else "residual"
        line = (
            f"{batch:5d} {dim:5d} {features:6d} {J:2d} {L:2d} {residual:12.4f} {gram:8.4f} "
            f"{gram / residual:9.2f}  {picks}"
        )
        if args.omp_tokens:
            omp = _omp_seconds_per_token(x, W, J * L, args.omp_tokens)
            icfl = min(residual, gram) / batch
            line += f"   {omp:11.2e}  {icfl:12.2e}  {omp / icfl:8.1f}"
        if args.compare_cpu:
            shares = _same_atoms_as_cpu(x, W, b, J, L)
            line += f"   {shares['residual']:26.4f}  {shares['gram']:.4f}"
        print(line, flush=True)


def _same_atoms_as_cpu(
    x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, J: int, L: int
) -> dict[str, float]:
    """Share of tokens whose support (the set of atoms with a non-zero code) each path on
    ``x``'s device gives exactly as the CPU's Gram path on the same float32 inputs."""
    reference = _gram(x.cpu(), W.cpu(), b.cpu(), J, L) != 0
    return {
        name: float(((path(x, W, b, J, L).cpu() != 0) == reference).all(1).float().mean())
        for name, path in (("residual", _residual), ("gram", _gram))
    }


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
