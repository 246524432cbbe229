"""Compare two results/ trees of the workflow: did a change leave the science unchanged?

Text tables (CSV, Markdown, LaTeX, JSON) must be byte-identical, except for columns that time
the run (seconds); Parquet tables, .npy arrays and .npz codes are compared by content (their
files embed timestamps). Logs, benchmarks, checkpoints, figures and model files are skipped.
Prints one line per difference and a summary; exits 1 if anything differs or is missing.

    python scripts/compare_results.py BEFORE/results AFTER/results [--ignore-missing GLOB ...]

``--ignore-missing`` names files that may be absent from AFTER, e.g. ones a newer workflow
deletes as temporary ("*/reconstructions.npy").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

TIMING_COLUMNS = {"seconds", "seconds_per_image", "gene_list_seconds", "enrichment_seconds"}
# Provenance written into a saved encoder's config.json, not a result.
PROVENANCE_KEYS = {"images"}
SKIPPED_FOLDERS = ("logs", "benchmarks", "checkpoints")
SKIPPED_SUFFIXES = (".png", ".pdf", ".pt", ".safetensors", ".log", ".tsv")


def _same_text_table(a: Path, b: Path) -> bool:
    if a.suffix == ".csv":
        x, y = pd.read_csv(a), pd.read_csv(b)
        kept = [c for c in x.columns if c not in TIMING_COLUMNS]
        return list(x.columns) == list(y.columns) and x[kept].equals(y[kept])
    if a.suffix == ".json":
        ignored = TIMING_COLUMNS | PROVENANCE_KEYS
        x, y = json.loads(a.read_text()), json.loads(b.read_text())
        if not (isinstance(x, dict) and isinstance(y, dict)):
            return x == y
        return {k: v for k, v in x.items() if k not in ignored} == {
            k: v for k, v in y.items() if k not in ignored
        }
    return False


def _same_binary(a: Path, b: Path) -> bool:
    if a.suffix == ".parquet":
        return pd.read_parquet(a).equals(pd.read_parquet(b))
    if a.suffix == ".npy":
        return np.array_equal(np.load(a), np.load(b))
    if a.suffix == ".npz":
        try:
            x, y = sp.load_npz(a), sp.load_npz(b)
            return x.shape == y.shape and (x != y).nnz == 0
        except (ValueError, KeyError):
            with np.load(a) as x, np.load(b) as y:
                return sorted(x.files) == sorted(y.files) and all(
                    np.array_equal(x[k], y[k]) for k in x.files
                )
    return False


def compare(before: Path, after: Path) -> dict[str, list[str]]:
    """Files of ``before`` by outcome: identical, timing_only, differ, missing (in after)."""
    outcome: dict[str, list[str]] = {
        "identical": [],
        "timing_only": [],
        "differ": [],
        "missing": [],
    }
    for a in sorted(before.rglob("*")):
        rel = a.relative_to(before)
        if not a.is_file() or a.suffix in SKIPPED_SUFFIXES or a.name.startswith("."):
            continue
        if set(rel.parts) & set(SKIPPED_FOLDERS):
            continue
        b = after / rel
        if not b.is_file():
            outcome["missing"].append(str(rel))
        elif a.read_bytes() == b.read_bytes():
            outcome["identical"].append(str(rel))
        elif a.suffix in (".parquet", ".npy", ".npz"):
            outcome["identical" if _same_binary(a, b) else "differ"].append(str(rel))
        else:
            outcome["timing_only" if _same_text_table(a, b) else "differ"].append(str(rel))
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore-missing", action="append", default=[], metavar="GLOB")
    args = parser.parse_args()
    outcome = compare(args.before, args.after)
    outcome["missing"] = [
        rel
        for rel in outcome["missing"]
        if not any(Path(rel).match(pattern) for pattern in args.ignore_missing)
    ]
    for kind in ("differ", "missing"):
        for rel in outcome[kind]:
            print(f"{kind.upper()} {rel}")
    print(", ".join(f"{kind} {len(files)}" for kind, files in outcome.items()))
    return 1 if outcome["differ"] or outcome["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
