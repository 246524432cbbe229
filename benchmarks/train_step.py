"""Time one training step of ICFL and TopK side by side (same data, same device).

    python benchmarks/train_step.py                      # demo size on CPU
    python benchmarks/train_step.py --dim 1024 --features 8192 --sparsity 100 \
        --atoms-per-iteration 5 --batch 8192 --device cuda   # paper size on a GPU

Prints seconds per step for each method and the ICFL / TopK ratio; timings on shared machines
are noisy, so the methods are timed in alternating rounds (``--rounds``) and the fastest round
of each is kept; compare ratios from one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from cellconcepts.device import resolve_device
from cellconcepts.dictionary.models import build_model


def time_steps(method: str, args: argparse.Namespace, x: torch.Tensor) -> float:
    model = build_model(
        method,
        args.dim,
        args.features,
        args.sparsity,
        seed=0,
        **({"atoms_per_iteration": args.atoms_per_iteration} if method == "icfl" else {}),
    ).to(x.device)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss = model.selected_loss(x)[0]  # what training computes
        loss.backward()
        optimiser.step()
        model.after_step(i + 1, generator)

    for i in range(args.warmup):
        step(i)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--sparsity", type=int, default=8)
    parser.add_argument("--atoms-per-iteration", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per method")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    x = torch.nn.functional.normalize(torch.randn(args.batch, args.dim, device=device), dim=1)
    times = {"icfl": float("inf"), "topk": float("inf")}
    for _ in range(args.rounds):
        for method in times:
            times[method] = min(times[method], time_steps(method, args, x))
    print(
        f"device={device} threads={torch.get_num_threads()} d={args.dim} M={args.features} "
        f"sparsity={args.sparsity} L={args.atoms_per_iteration} batch={args.batch}"
    )
    for method, seconds in times.items():
        print(f"{method:5s} {seconds * 1e3:9.2f} ms/step  {args.batch / seconds:12.0f} tokens/s")
    print(f"ratio icfl/topk {times['icfl'] / times['topk']:.2f}")


if __name__ == "__main__":
    main()
