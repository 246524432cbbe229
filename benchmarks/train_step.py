"""Time one training step of ICFL and TopK side by side (same data, same device), against the
floor the machine's own matrix-product rate and memory bandwidth set for each.

    python benchmarks/train_step.py                      # demo size on CPU
    python benchmarks/train_step.py --dim 1024 --features 8192 --sparsity 100 \
        --atoms-per-iteration 5 --batch 8192 --steps 2 --warmup 1 --threads 2   # paper, CPU
    python benchmarks/train_step.py --dim 1024 --features 8192 --sparsity 100 \
        --atoms-per-iteration 5 --batch 8192 --device cuda --encoder gram \
        --reading background --profile                  # paper size on a GPU

Prints seconds per step for each method and the ICFL / TopK ratio; timings on shared machines
are noisy, so the methods are timed in alternating rounds (``--rounds``) and the fastest round
of each is kept; compare ratios from one run rather than absolute numbers across runs.

Floors: the machine's rate R of the shape's own product (B x d) x (d x M), in multiply-adds per
second, and its read bandwidth (a sum over a 1 GiB buffer). TopK's step needs its encoder
product, B d M multiply-adds (its gradient and both decoders are sparse on CPU; on CUDA the
dense products add 4 B d M, which the floor leaves out: it is the algorithm's, not the
implementation's). ICFL's Gram path needs B d M for the first
correlations and d M^2 / 2 for G = W^T W, and its J iterations read a row of G per token and
atom, J B L M floats, from memory; its residual path needs J B d M. Small terms (top-k, the
sparse decoders, Adam) are left out. A model, not a bound: rows of G that a block's tokens
share may come from cache.

``--reading``: "none" trains on one fixed batch; "foreground" and "background" read each step's
batch from a token store on disk through training's own `ShuffleBuffer` (schema's buffer and
chunk sizes), in the training thread or in a thread beside it (`prefetched`).
``--sparse-products`` takes the decoders (and TopK's encoder gradient) as gathers of the k
selected columns or as dense products; by default, gathers on CPU only.
``--profile`` prints where one more step of each method spends its time (`torch.profiler`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from cellconcepts.device import resolve_device
from cellconcepts.dictionary.icfl import ENCODERS, GRAM_UPDATES
from cellconcepts.dictionary.models import build_model
from cellconcepts.dictionary.sampling import ShuffleBuffer, prefetched
from cellconcepts.dictionary.training import TrainConfig

METHODS = ("icfl", "topk")


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer sees it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best_seconds(function: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """The fastest of ``repeats`` timed calls, after one untimed."""
    function()
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        function()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def machine_rates(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(multiply-adds per second of the shape's (B x d) x (d x M) product, bytes read per
    second from a 1 GiB buffer) on ``device`` with the current threads."""
    x = torch.randn(args.batch, args.dim, device=device)
    W = torch.randn(args.dim, args.features, device=device)
    product = _best_seconds(lambda: torch.mm(x, W), device)
    buffer = torch.ones(256 * 1024 * 1024, device=device)
    read = _best_seconds(buffer.sum, device)
    return args.batch * args.dim * args.features / product, buffer.nbytes / read


def floors(args: argparse.Namespace, rate: float, bandwidth: float) -> dict[str, float]:
    """Each method's floor in seconds per step at this machine's rates (the model of the module
    docstring)."""
    B, d, M, L = args.batch, args.dim, args.features, args.atoms_per_iteration
    J = args.sparsity // L
    gram = (B * d * M + d * M * M / 2) / rate + J * B * L * M * 4 / bandwidth
    residual = J * B * d * M / rate
    return {"icfl": min(gram, residual), "topk": B * d * M / rate}


def batches(args: argparse.Namespace, device: torch.device, folder: Path) -> Iterator[torch.Tensor]:
    """Each step's batch (never ending): a fixed one, or read from a token store on disk."""
    generator = torch.Generator().manual_seed(0)
    if args.reading == "none":
        x = torch.randn(args.batch, args.dim, generator=generator)
        x = torch.nn.functional.normalize(x, dim=1).to(device)
        while True:
            yield x
    rows = args.store_tokens
    store = np.lib.format.open_memmap(
        folder / "tokens.npy", mode="w+", dtype=np.float32, shape=(rows, args.dim)
    )
    for start in range(0, rows, 65536):
        block = torch.randn(min(65536, rows - start), args.dim, generator=generator)
        store[start : start + len(block)] = torch.nn.functional.normalize(block, dim=1).numpy()
    store.flush()
    store = np.load(folder / "tokens.npy", mmap_mode="r")
    sampler = ShuffleBuffer(
        store,
        np.arange(rows),
        args.batch,
        0,
        buffer_rows=TrainConfig.buffer_tokens,
        chunk_rows=TrainConfig.chunk_tokens,
    )
    for _, (_, raw) in prefetched(sampler.batch, 0, 10**9, args.reading == "background"):
        yield torch.from_numpy(np.ascontiguousarray(raw)).to(device)


def build(method: str, args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """The model, with the implementation the options force."""
    options = {"atoms_per_iteration": args.atoms_per_iteration} if method == "icfl" else {}
    model = build_model(method, args.dim, args.features, args.sparsity, seed=0, **options)
    if method == "icfl":
        model.encoder, model.gram_update = args.encoder, args.gram_update
    model.sparse_products = {"device": None, "on": True, "off": False}[args.sparse_products]
    return model.to(device)


def stepper(
    method: str, args: argparse.Namespace, data: Iterator[torch.Tensor], device: torch.device
) -> Callable[[int], None]:
    """A function that runs training step i (what training computes, `selected_loss`)."""
    model = build(method, args, device)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        x = next(data)
        optimiser.zero_grad(set_to_none=True)
        loss = model.selected_loss(x)[0]
        loss.backward()
        optimiser.step()
        model.after_step(i + 1, generator)

    return step


def time_steps(
    method: str, args: argparse.Namespace, data: Iterator[torch.Tensor], device: torch.device
) -> float:
    """Seconds per step of a fresh model, after ``args.warmup`` untimed steps."""
    step = stepper(method, args, data, device)
    for i in range(args.warmup):
        step(i)
    _synchronize(device)
    start = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    _synchronize(device)
    return (time.perf_counter() - start) / args.steps


def profile(
    method: str, args: argparse.Namespace, data: Iterator[torch.Tensor], device: torch.device
) -> None:
    """Print the ops of one step after one untimed, by their own time. On CPU the ICFL Gram
    path runs its blocks on the calling thread while profiled (the profiler does not see a
    pool's threads), so its time there is that of one thread."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    step = stepper(method, args, data, device)
    step(0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profiler(activities=activities) as run:
        step(1)
        _synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"--- {method}: one step, by {key}")
    print(
        run.key_averages().table(sort_by=key, row_limit=args.profile_rows, max_name_column_width=40)
    )


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
    parser.add_argument("--encoder", choices=ENCODERS, default="auto", help="ICFL's encoder path")
    parser.add_argument(
        "--gram-update", choices=GRAM_UPDATES, default=None, help="default: the device's"
    )
    parser.add_argument("--reading", choices=("none", "foreground", "background"), default="none")
    parser.add_argument(
        "--sparse-products",
        choices=("device", "on", "off"),
        default="device",
        help="products with the sparse codes as gathers (on), dense (off), or the device's",
    )
    parser.add_argument("--store-tokens", type=int, help="rows of the store (default 4 x batch)")
    parser.add_argument(
        "--project-steps", type=int, default=300_000, help="steps of the projected run (paper's)"
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-rows", type=int, default=8)
    args = parser.parse_args()
    args.store_tokens = args.store_tokens or 4 * args.batch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rate, bandwidth = machine_rates(args, device)
    floor = floors(args, rate, bandwidth)
    times = {method: float("inf") for method in METHODS}
    with tempfile.TemporaryDirectory() as folder:
        data = batches(args, device, Path(folder))
        for _ in range(args.rounds):
            for method in METHODS:
                times[method] = min(times[method], time_steps(method, args, data, device))
        if args.profile:
            for method in METHODS:
                profile(method, args, data, device)
    print(
        f"device={device} threads={torch.get_num_threads()} d={args.dim} M={args.features} "
        f"sparsity={args.sparsity} L={args.atoms_per_iteration} batch={args.batch} "
        f"encoder={args.encoder} gram_update={args.gram_update or 'default'} "
        f"reading={args.reading} sparse_products={args.sparse_products}"
    )
    print(
        f"machine: {rate / 1e9:.1f} G multiply-adds/s (this product), "
        f"{bandwidth / 1e9:.1f} GB/s read"
    )
    for method, seconds in times.items():
        print(
            f"{method:5s} {seconds * 1e3:9.2f} ms/step  {args.batch / seconds:12.0f} tokens/s  "
            f"floor {floor[method] * 1e3:9.2f} ms  ({seconds / floor[method]:.2f}x the floor)  "
            f"{args.project_steps} steps: {seconds * args.project_steps / 3600:.1f} h"
        )
    print(
        f"ratio icfl/topk {times['icfl'] / times['topk']:.2f}  "
        f"(floors' ratio {floor['icfl'] / floor['topk']:.2f})"
    )


if __name__ == "__main__":
    main()
