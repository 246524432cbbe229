"""Token stores larger than memory: training and encoding at 1x, 4x and 16x a fixed store size,
each run in a child process under a memory limit smaller than the largest store.

    python benchmarks/large_store.py                          # 0.25, 1 and 4 GiB; limit 3 GiB
    python benchmarks/large_store.py --base-gib 0.5 --limit-gib 3

For every size it writes a token store (d = 128 float32, 10 % controls, 75 % train; Gaussian
mixtures of 64 atoms, so the dictionary has something to learn), evicts it from the page cache,
and runs in a child process limited by a cgroup (v1 `memory.limit_in_bytes`, which counts the
page cache too; it needs root and a writable /sys/fs/cgroup/memory, else `systemd-run --scope
-p MemoryMax=`; without either it refuses to run):

1. one epoch of TopK training (M = 512, k = 8, batch 4096) through the workflow's
   `train_dictionary`, i.e. the `ShuffleBuffer` (64 Ki tokens, 32 MiB, chunks of 8 Ki rows);
2. encoding every token with the workflow's `encode_tokens` (streamed in batches of 8192; the
   codes it returns are in memory, n x k x 8 bytes);
3. for comparison, 100 batches read as the sampler before the buffer read them: random rows
   through the memory map.

Prints tokens per second and the child's peak RSS per phase, and the cgroup's peak usage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DIM = 128
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def write_store(folder: Path, n_tokens: int, seed: int = 0) -> None:
    """A token store of ``n_tokens`` rows written in chunks (never whole in memory)."""
    from cellconcepts.store.layout import TOKEN_OBS, TOKENS

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((64, DIM)).astype(np.float32)
    tokens = np.lib.format.open_memmap(
        folder / TOKENS, mode="w+", dtype=np.float32, shape=(n_tokens, DIM)
    )
    step = 1 << 18
    for start in range(0, n_tokens, step):
        stop = min(start + step, n_tokens)
        weights = rng.standard_normal((stop - start, 64)).astype(np.float32)
        weights[rng.random(weights.shape) > 4 / 64] = 0  # about 4 atoms per token
        noise = 0.1 * rng.standard_normal((stop - start, DIM)).astype(np.float32)
        tokens[start:stop] = weights @ atoms + noise
    tokens.flush()
    del tokens
    rows = np.arange(n_tokens)
    obs = pd.DataFrame(
        {
            "token_id": rows.astype(str),
            "is_control": rows % 10 == 0,
            "split": np.where(rows % 4 == 0, "test", "train"),
        }
    )
    obs.to_parquet(folder / TOKEN_OBS, index=False)
    evict(folder / TOKENS)


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache, so the child reads it from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(folder: Path, work: Path) -> None:
    """The measured job: train one epoch, encode everything, then read random rows."""
    import torch

    from cellconcepts.dictionary.encode import encode_tokens
    from cellconcepts.dictionary.models import build_model
    from cellconcepts.dictionary.training import TrainConfig, train_dictionary
    from cellconcepts.store.tokens import TokenStore

    torch.set_num_threads(2)
    store = TokenStore.open(folder, columns=["split"])  # what the train stage reads
    train_rows = np.flatnonzero(store.obs["split"].to_numpy() == "train")
    n_tokens = int(store.tokens.shape[0])
    results: dict[str, float] = {"tokens": n_tokens, "start_rss_mib": peak_rss_mib()}
    batch = 4096
    config = TrainConfig(
        steps=len(train_rows) // batch,
        batch_size=batch,
        lr=1e-3,
        buffer_tokens=65536,
        chunk_tokens=8192,
        checkpoint_every=10**9,
        log_every=100,
    )
    model = build_model("topk", DIM, 512, 8, seed=0)
    start = time.perf_counter()
    result = train_dictionary(
        model,
        store.tokens,
        train_rows,
        None,
        config,
        checkpoint_dir=work / "checkpoint",
        metrics_path=work / "metrics.csv",
    )
    seconds = time.perf_counter() - start
    results["train_tokens_per_s"] = config.steps * batch / seconds
    results["train_recon_cosine"] = float(result.metrics["recon_cosine"].iloc[-1])
    results["train_peak_rss_mib"] = peak_rss_mib()

    start = time.perf_counter()
    encoded = encode_tokens(model, store.tokens, None, batch_size=8192, device="cpu")
    results["encode_tokens_per_s"] = n_tokens / (time.perf_counter() - start)
    results["encode_peak_rss_mib"] = peak_rss_mib()
    results["codes_mib"] = (encoded.codes.data.nbytes + encoded.codes.indices.nbytes) / 2**20
    del encoded

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(100):
        rows = np.sort(rng.choice(train_rows, size=batch, replace=False))
        np.asarray(store.tokens[rows], dtype=np.float32)
    results["random_rows_tokens_per_s"] = 100 * batch / (time.perf_counter() - start)
    print(json.dumps(results))


def run_limited(command: list[str], limit_bytes: int) -> tuple[str, int | None]:
    """Run ``command`` under a memory limit; returns (its stdout, the cgroup's peak bytes)."""
    if CGROUP_ROOT.is_dir() and os.access(CGROUP_ROOT, os.W_OK):
        group = CGROUP_ROOT / f"cellconcepts_bench_{os.getpid()}"
        group.mkdir()
        try:
            (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
            procs = str(group / "cgroup.procs")

            def enter() -> None:
                Path(procs).write_text(str(os.getpid()))

            done = subprocess.run(command, preexec_fn=enter, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(
                    f"the measured job failed ({done.returncode}): {done.stderr[-1500:]}"
                )
            out = done.stdout
            return out, int((group / "memory.max_usage_in_bytes").read_text())
        finally:
            group.rmdir()
    if shutil.which("systemd-run"):
        scoped = ["systemd-run", "--scope", "--quiet", "-p", f"MemoryMax={limit_bytes}"]
        out = subprocess.run(scoped + command, capture_output=True, text=True, check=True).stdout
        return out, None
    raise SystemExit("no way to limit memory here (cgroup v1 memory or systemd-run needed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-gib", type=float, default=0.25)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--limit-gib", type=float, default=3.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cellconcepts_large_store"))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.child.parent / f"{args.child.name}_work")
        return
    limit = int(args.limit_gib * 2**30)
    print(f"memory limit {args.limit_gib} GiB; d = {DIM} float32")
    header = (
        "size  store GiB  tokens     train tok/s  train RSS MiB  encode tok/s  encode RSS MiB"
        "  codes MiB  random-row tok/s  cgroup peak MiB"
    )
    print(header, flush=True)
    for size in args.sizes:
        n_tokens = int(args.base_gib * size * 2**30 / (DIM * 4))
        folder = args.work / f"store_{size}x"
        shutil.rmtree(args.work / f"store_{size}x_work", ignore_errors=True)
        if not folder.is_dir():
            write_store(folder, n_tokens)
        else:
            evict(folder / "tokens.npy")
        os.environ["TQDM_DISABLE"] = "1"  # the child's progress bars would fill its stderr
        out, peak = run_limited([sys.executable, __file__, "--child", str(folder)], limit)
        r = json.loads(out.strip().splitlines()[-1])
        store_gib = n_tokens * DIM * 4 / 2**30
        print(
            f"{size:3d}x  {store_gib:9.2f}  {r['tokens']:9d}  {r['train_tokens_per_s']:11.0f}  "
            f"{r['train_peak_rss_mib']:13.0f}  {r['encode_tokens_per_s']:12.0f}  "
            f"{r['encode_peak_rss_mib']:14.0f}  {r['codes_mib']:9.0f}  "
            f"{r['random_rows_tokens_per_s']:16.0f}  "
            f"{(peak or 0) / 2**20:15.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
