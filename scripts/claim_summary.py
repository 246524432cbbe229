"""The paper's central claim on a finished run, as Markdown for docs/results.md and docs/paper.md:
per dataset, task and pair (ICFL + PCA against TopK + PCA and TopK without whitening), the
difference of the means over labels under each metric with its interval over wells and seeds
and its verdict, read from `results/<dataset>/tables/claim.csv`; and per variant the labels whose
held-out best feature is above null, from `tables/label_scores.csv`.

    python scripts/claim_summary.py results [--sparsity 8]

Nothing is typed by hand: rerun it after a run and paste its output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

METRICS = {
    "insample_avg": "(a) paper's metric, in-sample",
    "heldout_avg": "(b) held out",
    "heldout_avg_matched": "(b') held out, matched frequency",
    "heldout_ap": "(c) average precision, held out",
}


NAMES = {"icfl_pca": "ICFL + PCA", "topk_pca": "TopK + PCA", "topk_none": "TopK (none)"}


def cell(row: pd.Series) -> str:
    """'+0.030 [-0.004, +0.074] no difference'."""
    verdict = row["verdict"]
    for name, shown in NAMES.items():
        verdict = verdict.replace(name, shown)
    return f"{row['mean_difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] {verdict}"


def dataset_block(folder: Path, sparsity: int | None) -> str:
    claim = pd.read_csv(folder / "tables" / "claim.csv")
    if sparsity is not None and sparsity in set(claim["sparsity"]):
        claim = claim[claim["sparsity"] == sparsity]
    lines = [
        "| task (k) | ICFL + PCA minus | " + " | ".join(METRICS.values()) + " |",
        "| --- | --- |" + " --- |" * len(METRICS),
    ]
    for (task, k, second), rows in claim.groupby(["task", "sparsity", "second"], sort=False):
        by_score = rows.set_index("score")
        cells = [cell(by_score.loc[s]) if s in by_score.index else "-" for s in METRICS]
        name = "TopK + PCA" if second == "topk_pca" else "TopK, no whitening"
        lines.append(f"| {task} ({k}) | {name} | " + " | ".join(cells) + " |")
    scores = pd.read_csv(folder / "tables" / "label_scores.csv")
    held = scores[scores["score"] == "heldout_avg"]
    if sparsity is not None and sparsity in set(held["sparsity"]):
        held = held[held["sparsity"] == sparsity]
    above = (
        held.groupby(["task", "method", "whitening", "seed"])["above_null"]
        .agg(["sum", "size"])
        .groupby(["task", "method", "whitening"])
        .mean()
    )
    lines += [
        "",
        "Labels whose held-out best feature is above null (mean over seeds, of the task's labels):",
        "",
        "| task | ICFL + PCA | ICFL, no whitening | TopK + PCA | TopK, no whitening |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for task in dict.fromkeys(held["task"]):
        values = []
        for method, whitening in (
            ("icfl", "pca"),
            ("icfl", "none"),
            ("topk", "pca"),
            ("topk", "none"),
        ):
            key = (task, method, whitening)
            values.append(
                f"{above.loc[key, 'sum']:.1f} / {above.loc[key, 'size']:.0f}"
                if key in above.index
                else "-"
            )
        lines.append(f"| {task} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--sparsity", type=int, default=8, help="the sparsity to report")
    args = parser.parse_args()
    for folder in sorted(
        p for p in args.results.iterdir() if (p / "tables" / "claim.csv").exists()
    ):
        print(f"**{folder.name}**\n\n{dataset_block(folder, args.sparsity)}\n")


if __name__ == "__main__":
    main()
