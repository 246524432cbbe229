"""Time a training step's decode with its backward: the dense product z @ W_dec^T against the
weighted sum of the k selected columns per token (`decode_selected`, what training uses on CPU),
side by side on the same codes.

    python benchmarks/sparse_decode.py --threads 1         # the demo's and the paper's shapes
    python benchmarks/sparse_decode.py --shapes 8192,1024,8192,100 --device cuda

Each shape is batch,dim,features,k. Both compute the same reconstruction (checked here to 1e-4
relative) and the same gradients; the dense one multiplies B x M x d, the sparse one B x k x d.
Prints milliseconds per call (the fastest of ``--rounds`` rounds) and sparse / dense. On a
non-CPU device `decode_selected` is the dense product, so there the script times the sparse
kernel (embedding_bag) directly.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cellconcepts.device import resolve_device, set_threads

GRID = [
    (256, 32, 128, 8),  # pbmc and the screen
    (2048, 64, 512, 8),  # synthetic demo
    (1024, 1024, 8192, 100),  # the paper's shape, CPU batch
]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _inputs(batch: int, dim: int, features: int, k: int, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    W = torch.randn(dim, features, generator=generator).to(device).requires_grad_()
    pre = torch.randn(batch, features, generator=generator).to(device).requires_grad_()
    x = torch.randn(batch, dim, generator=generator).to(device)
    return W, pre, x, k


def _dense(W, pre, x, k):
    top = torch.topk(pre, k, dim=-1, sorted=False)
    z = torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
    x_hat = z @ W.T
    (x - x_hat).pow(2).sum(-1).mean().backward()
    return x_hat


def _sparse(W, pre, x, k):
    top = torch.topk(pre, k, dim=-1, sorted=False)
    weights = F.relu(top.values)
    x_hat = F.embedding_bag(top.indices, W.T.contiguous(), per_sample_weights=weights, mode="sum")
    (x - x_hat).pow(2).sum(-1).mean().backward()
    return x_hat


def _timed(function, inputs, device: torch.device, repeats: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        function(*inputs)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            function(*inputs)
        _synchronize(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", help="batch,dim,features,k (default: a grid)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    set_threads(args.threads)
    device = resolve_device(args.device)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else GRID
    print(f"device={device} threads={torch.get_num_threads()}")
    print(f"{'batch':>5} {'dim':>5} {'feats':>6} {'k':>4}   dense ms  sparse ms  sparse/dense")
    for shape in shapes:
        inputs = _inputs(*shape, device)
        torch.testing.assert_close(_sparse(*inputs), _dense(*inputs), rtol=1e-4, atol=1e-4)
        repeats = max(1, args.repeats if shape[2] < 8192 else 1)
        dense = _timed(_dense, inputs, device, repeats, args.rounds)
        sparse = _timed(_sparse, inputs, device, repeats, args.rounds)
        print(
            f"{shape[0]:>5} {shape[1]:>5} {shape[2]:>6} {shape[3]:>4} "
            f"{dense * 1e3:>10.2f} {sparse * 1e3:>10.2f} {sparse / dense:>13.2f}"
        )


if __name__ == "__main__":
    main()
