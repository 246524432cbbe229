"""Selectivity and linear probing at the paper's size: 8192 features x 1,138 gene labels x
80,000 tokens, k = 100 non-zeros per token (the RxRx3 evaluation of Donhauser et al. 2025).

    python benchmarks/evaluation_scale.py                   # the paper's size
    python benchmarks/evaluation_scale.py --tokens 20000    # smaller, to see how it scales

The codes are simulated with structure, so the scores are not trivial: every label prefers 200
features, and each token draws half of its k active features from its label's preferences and
half uniformly (a few coincide, so slightly fewer than k non-zeros). Times the workflow's own
functions on the sparse codes as the evaluate rules read them (CSR): selectivity of every
feature for every label with the per-label best table (`task_selectivity_tables`), then the
class-balanced logistic-regression probe with the workflow's default settings (`probe_tasks`:
25 % test, at most 20,000 training rows, 300 iterations; `--max-train 0` for all of them), on
the sparse codes without densifying them. Prints seconds, peak RSS and the probe's BTA next to
chance.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.evaluate.probing import ProbeSettings, probe_tasks
from cellconcepts.evaluate.selectivity import task_selectivity_tables


def simulated_codes(
    n_tokens: int, n_features: int, n_labels: int, k: int, seed: int = 0
) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """(n_tokens, n_features) CSR codes with about k non-zeros per row, and an obs with a
    label per token; half of each token's features are distinct ones of its label's 200
    preferred ones."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(n_labels, size=n_tokens)
    preferred = np.argsort(rng.random((n_labels, n_features)), axis=1)[:, :200]
    picks = np.argsort(rng.random((n_tokens, 200)), axis=1)[:, : k // 2]
    from_label = preferred[labels[:, None], picks]
    uniform = rng.integers(n_features, size=(n_tokens, k - k // 2))
    columns = np.concatenate([from_label, uniform], axis=1)
    rows = np.repeat(np.arange(n_tokens), k)
    values = rng.standard_normal(n_tokens * k).astype(np.float32)
    codes = sp.csr_matrix((values, (rows, columns.ravel())), shape=(n_tokens, n_features))
    codes.sum_duplicates()
    obs = pd.DataFrame({"gene": [f"gene_{i}" for i in labels]})
    return codes, obs


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=80_000)
    parser.add_argument("--features", type=int, default=8192)
    parser.add_argument("--labels", type=int, default=1138)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--skip-probe", action="store_true")
    parser.add_argument(
        "--max-train", type=int, default=20_000, help="probe training rows (0: all of them)"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    codes, obs = simulated_codes(args.tokens, args.features, args.labels, args.k)
    print(
        f"simulated {codes.shape[0]} x {codes.shape[1]} codes, {codes.nnz} non-zeros, "
        f"{obs['gene'].nunique()} labels ({time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    tasks = [{"name": "gene", "column": "gene"}]

    start = time.perf_counter()
    counts, best = task_selectivity_tables(codes, obs, tasks, (0.5, 0.2), min_label_size=10)
    selectivity_s = time.perf_counter() - start
    print(
        f"selectivity: {selectivity_s:.2f} s; {len(best)} labels, features with avg "
        f"selectivity > 0.2: {int(counts.loc[0, 'n_features_sel_0.2'])}; peak RSS "
        f"{peak_rss_gb():.2f} GB",
        flush=True,
    )
    if args.skip_probe:
        return
    probe = ProbeSettings(max_train=args.max_train or None)
    start = time.perf_counter()
    (row,) = probe_tasks({"codes": codes}, obs, tasks, probe, min_label_size=10)
    probe_s = time.perf_counter() - start
    print(
        f"probe: {probe_s:.1f} s; BTA {row['bta']:.3f} (chance {row['chance']:.4f}), "
        f"{row['n_train']} train / {row['n_test']} test rows, {row['n_classes']} classes; "
        f"peak RSS {peak_rss_gb():.2f} GB",
        flush=True,
    )


if __name__ == "__main__":
    main()
