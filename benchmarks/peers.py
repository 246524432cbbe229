"""Speed against the peers: cellconcepts' ICFL and TopK beside overcomplete's TopKSAE,
BatchTopKSAE, MpSAE (matching pursuit) and OMPSAE (orthogonal matching pursuit), in one process,
on the same tokens, at equal non-zeros per token.

    bash benchmarks/peers/setup.sh          # the peers' own environment (once)
    PYTHONPATH=workflow benchmarks/peers/.venv/bin/python benchmarks/peers.py \
        --out benchmarks/results/peers_speed.csv
    # the paper's shape takes minutes per call for the pursuits: one round of one call
    PYTHONPATH=workflow benchmarks/peers/.venv/bin/python benchmarks/peers.py \
        --shapes 1024,1024,8192,100,5 --rounds 1 --calls 1 \
        --out benchmarks/results/peers_speed.csv --append

For each shape (batch,dim,features,k,L: ICFL runs J = k / L iterations of L atoms) and thread
count, each model is timed for its encoder alone (no gradient) and for one training step
(forward, loss, backward, Adam step; cellconcepts' step is what its training runs, with its
after-step column handling; overcomplete's is the body of its `train_sae`: MSE reconstruction,
gradient clipping at 1.0). Models are timed in alternating rounds and the fastest round of each
is kept; the ratio column divides by cellconcepts TopK of the same shape, threads and part.
Every model keeps its library's defaults (overcomplete: its default encoders; OMPSAE: 10 NNLS
iterations), so the comparison is of the methods as shipped, not tuned against each other.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from cellconcepts.dictionary.models import build_model

# The demo's synthetic dictionary, the shape of issue 30's first measurement, the paper's shape.
SHAPES = ["1024,64,512,8,2", "1024,256,2048,16,1"]
PAPER_SHAPE = "1024,1024,8192,100,5"
PEERS = ("TopKSAE", "BatchTopKSAE", "MpSAE", "OMPSAE")


def _peer(name: str, dim: int, features: int, k: int, batch: int) -> torch.nn.Module:
    """overcomplete's model at k non-zeros per token: its BatchTopKSAE keeps ``top_k``
    activations per batch, not per token, so it gets k x batch."""
    from overcomplete import sae

    if name == "TopKSAE":
        return sae.TopKSAE(dim, features, top_k=k)
    if name == "BatchTopKSAE":
        return sae.BatchTopKSAE(dim, features, top_k=k * batch)
    return getattr(sae, name)(dim, features, k=k)


def _timers(model: torch.nn.Module, x: torch.Tensor, ours: bool) -> dict[str, Callable]:
    """One call of the encoder and of a training step, as the model's library runs them."""
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    count = [0]

    def encode() -> None:
        with torch.no_grad():
            model.encode(x)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        if ours:
            loss = model.selected_loss(x)[0]
        else:
            _, _, x_hat = model(x)
            loss = (x - x_hat).square().mean()
        loss.backward()
        if not ours:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        if ours:
            count[0] += 1
            model.after_step(count[0], generator)

    return {"encode": encode, "step": step}


def _models(
    dim: int, features: int, k: int, atoms: int, batch: int, only: list[str] | None
) -> dict[str, torch.nn.Module]:
    models = {
        "cellconcepts TopK": build_model("topk", dim, features, k, seed=0),
        "cellconcepts ICFL": build_model("icfl", dim, features, k, atoms_per_iteration=atoms,
                                         seed=0),
    }  # fmt: skip
    torch.manual_seed(0)
    models.update({f"overcomplete {name}": _peer(name, dim, features, k, batch) for name in PEERS})
    return {name: model for name, model in models.items() if only is None or name in only}


def measure(
    shape: str, threads: int, rounds: int, calls: int, only: list[str] | None = None
) -> list[dict]:
    batch, dim, features, k, atoms = (int(v) for v in shape.split(","))
    torch.set_num_threads(threads)
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))
    models = _models(dim, features, k, atoms, batch, only)
    timers = {name: _timers(m, x, name.startswith("cellconcepts")) for name, m in models.items()}
    best: dict[tuple[str, str], float] = {}
    for part in ("encode", "step"):
        for name in timers:  # warm-up, outside the timing
            timers[name][part]()
        for _ in range(rounds):
            for name, timer in timers.items():
                start = time.perf_counter()
                for _ in range(calls):
                    timer[part]()
                seconds = (time.perf_counter() - start) / calls
                key = (name, part)
                best[key] = min(best.get(key, float("inf")), seconds)
    rows = []
    for (name, part), seconds in best.items():
        reference = best[("cellconcepts TopK", part)]
        rows.append({"shape": shape, "batch": batch, "dim": dim, "features": features, "k": k,
                     "icfl_J_x_L": f"{k // atoms} x {atoms}", "threads": threads, "model": name,
                     "part": part, "seconds": seconds,
                     "ratio_to_cellconcepts_topk": seconds / reference})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes", nargs="+", default=SHAPES, help=f"batch,dim,features,k,L (paper: {PAPER_SHAPE})"
    )
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="calls per round")
    parser.add_argument("--out", type=Path, help="CSV of every measurement")
    parser.add_argument("--append", action="store_true", help="add to --out's rows")
    parser.add_argument(
        "--models", nargs="+", help="only these (the reference, cellconcepts TopK, always runs)"
    )
    args = parser.parse_args()
    import overcomplete

    print(f"torch {torch.__version__}, overcomplete {getattr(overcomplete, '__version__', '0.3.0')}"
          f", {platform.processor() or platform.machine()}")  # fmt: skip
    rows = []
    if args.out and args.append and args.out.exists():
        rows = pd.read_csv(args.out).to_dict("records")
    for shape in args.shapes:
        for threads in args.threads:
            only = None if args.models is None else ["cellconcepts TopK", *args.models]
            measured = measure(shape, threads, args.rounds, args.calls, only)
            rows += measured
            table = pd.DataFrame(measured)
            print(f"\nshape {shape} (batch,dim,features,k,L), {threads} thread(s):")
            print(table.pivot(index="model", columns="part", values="ratio_to_cellconcepts_topk")
                  .join(table.pivot(index="model", columns="part", values="seconds"),
                        rsuffix=" s").round(4).to_string())  # fmt: skip
            if args.out:  # after every shape, so that a long run keeps what it measured
                args.out.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
