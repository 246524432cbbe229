"""The demo's numbers in docs/results.md and docs/paper.md, generated from a committed snapshot.

A *snapshot* is the tables of one finished demo run (every ``<dataset>/tables/*.csv``,
``<dataset>/headline.csv`` and ``paper_map.csv``) copied into ``docs/snapshot/`` with
``SNAPSHOT.json``: the commit, date, machine, command, job count and times of that run. Every
demo number the docs quote is written between ``<!-- generated: NAME -->`` and
``<!-- generated: end NAME -->`` by a function of ``BLOCKS`` reading the snapshot, so a doc
number always equals a committed file:
``tests/report/test_results_doc.py`` regenerates each block and fails on a difference, and
``scripts/compare_results.py docs/snapshot results --tables`` tells how a fresh run differs.

    python -m cellconcepts.report.results_doc snapshot RESULTS --wall-seconds S --jobs N
    python -m cellconcepts.report.results_doc docs [--check]
    python -m cellconcepts.report.results_doc claim RESULTS   # the claim tables of any run

Verdicts quoted in the blocks are those of ``tables/claim.csv`` (a side is named only where
the interval over wells and model seeds excludes 0); single-model tables (heatmaps, single
cells, GO recovery) say which model they show and state no comparison between methods.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cellconcepts.files import read_results_csv
from cellconcepts.layout import ResultsLayout
from cellconcepts.report.figures import variant_label
from cellconcepts.variant import Variant

DATASETS = ("synthetic", "pbmc", "cellpainting")
REPO = Path(__file__).resolve().parents[3]  # workflow/cellconcepts/report/ -> the repository
SNAPSHOT = REPO / "docs" / "snapshot"
DOCS = (REPO / "docs" / "results.md", REPO / "docs" / "paper.md")
COMMAND = "snakemake --cores all"

VARIANTS = (("icfl", "pca"), ("icfl", "none"), ("topk", "pca"), ("topk", "none"))
VARIANT_NAMES = {
    ("icfl", "pca"): "ICFL + PCA",
    ("icfl", "none"): "ICFL, no whitening",
    ("topk", "pca"): "TopK + PCA",
    ("topk", "none"): "TopK, no whitening",
}
METRICS = {
    "insample_avg": "(a) paper's metric, in-sample",
    "heldout_avg": "(b) held out",
    "heldout_avg_matched": "(b') held out, matched frequency",
    "heldout_ap": "(c) average precision, held out",
}
# 'icfl_pca' -> 'ICFL + PCA', the figures' legend names, as claim.csv names the variants.
PAIR_NAMES = {f"{m}_{w}": variant_label(m, w) for m, w in VARIANTS}
DEMO_SPARSITY = 8
OTHER_MACHINE = "emulated_machine"  # docs/compare/<this>: the same demo with other CPU kernels

_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w.:-]+) -->\n)(?P<body>.*?)(<!-- generated: end (?P=name) -->)",
    re.DOTALL,
)


# --- the snapshot -------------------------------------------------------------------------


def _git(folder: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def _job_seconds(results: Path) -> dict[str, float]:
    """Sum of each dataset's per-rule benchmark seconds (``benchmarks/*.tsv``, column s)."""
    totals = {}
    for dataset in sorted(p for p in results.iterdir() if (p / "benchmarks").is_dir()):
        seconds = [
            float(pd.read_csv(tsv, sep="\t")["s"].sum())
            for tsv in sorted((dataset / "benchmarks").glob("*.tsv"))
        ]
        totals[dataset.name] = round(sum(seconds), 1)
    return totals


def take_snapshot(
    results: Path,
    out: Path = SNAPSHOT,
    *,
    wall_seconds: float,
    jobs: int,
    started: str | None = None,
    command: str = COMMAND,
    environment: dict[str, str] | None = None,
) -> dict:
    """Copy a finished run's tables into ``out`` and describe the run in SNAPSHOT.json."""
    results = Path(results).resolve()
    if not Path(ResultsLayout(results).paper_map(".csv")).exists():
        raise FileNotFoundError(f"{results}: no paper_map.csv; is this a finished demo run?")
    if out.exists():
        shutil.rmtree(out)
    copied = 0
    paths = ResultsLayout(results)
    for name in sorted(p.name for p in results.iterdir() if Path(paths.table("", p.name)).is_dir()):
        files = sorted(Path(paths.table("", name)).glob("*.csv"))
        if Path(paths.headline(name) + ".csv").exists():
            files.append(Path(paths.headline(name) + ".csv"))
        for file in files:
            target = out / file.relative_to(results)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
            copied += 1
    shutil.copyfile(ResultsLayout(results).paper_map(".csv"), ResultsLayout(out).paper_map(".csv"))
    copied += 1
    import torch

    run_folder = results.parent
    meta = {
        "commit": _git(run_folder, "rev-parse", "--short=7", "HEAD"),
        # A checkout of a commit with no local change, tracked or untracked (ignored outputs
        # such as results/ aside): what a fresh clone that ran the demo looks like.
        "clean_clone": bool(_git(run_folder, "rev-parse", "HEAD"))
        and _git(run_folder, "status", "--porcelain") == "",
        "date": started or datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": command,
        "jobs": int(jobs),
        "wall_seconds": round(float(wall_seconds), 1),
        "job_seconds": _job_seconds(results),
        "machine": f"{platform.machine()}, {_cpu_name()}, {_cores()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "files": copied,
        "environment": dict(environment or {}),
    }
    (out / "SNAPSHOT.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def meta(root: Path) -> dict:
    return json.loads((Path(root) / "SNAPSHOT.json").read_text())


# --- formatting ----------------------------------------------------------------------------


def _pm(mean: float, sd: float, digits: int) -> str:
    if pd.isna(mean):
        return "-"
    if pd.isna(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +/- {sd:.{digits}f}"


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str) -> list[str]:
    """A Markdown table; ``align`` has one character per column, 'l' or 'r'."""
    marks = ["---:" if a == "r" else "---" for a in align]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(marks) + " |",
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]


def _read(root: Path, dataset: str, name: str) -> pd.DataFrame:
    path = Path(ResultsLayout(root).table(name, dataset))
    if not path.exists():
        raise FileNotFoundError(f"{path}: the snapshot lacks this table")
    return read_results_csv(path)


def _link(dataset: str, name: str) -> str:
    return f"[`{dataset}/tables/{name}`](snapshot/{dataset}/tables/{name})"


def _source(dataset: str, *names: str) -> str:
    return "From " + ", ".join(_link(dataset, n) for n in names) + "."


# --- blocks --------------------------------------------------------------------------------


def run_block(root: Path) -> str:
    m = meta(root)
    jobs = m["job_seconds"]
    clone = "a fresh clone" if m["clean_clone"] else "a clone with local changes"
    lines = [
        f"Snapshot of {m['date']}: commit {m['commit']}, {clone}, `{m['command']}` on "
        f"`config/config.yaml`; {m['machine']}, Python {m['python']}, torch {m['torch']}. Its "
        f"tables are in [docs/snapshot/](snapshot/) ({m['files']} files).",
        "",
        *_table(
            ["jobs", "wall time", "the jobs' own seconds, per dataset"],
            [
                [
                    m["jobs"],
                    _minutes(m["wall_seconds"]),
                    ", ".join(f"{k} {v:,.0f} s" for k, v in jobs.items())
                    + f"; total {sum(jobs.values()):,.0f} s",
                ]
            ],
            "rrl",
        ),
    ]
    return "\n".join(lines)


MIN_SEEDS = 3  # a verdict is stated only where both variants have this many model seeds


def _seeds(root: Path, dataset: str, sparsity: int | None) -> dict[str, int]:
    """Model seeds per variant ('icfl_pca', ...) at ``sparsity`` (all sparsities: the fewest)."""
    table = _read(root, dataset, "headline_seeds.csv")
    if sparsity is not None and sparsity in set(table["sparsity"]):
        table = table[table["sparsity"] == sparsity]
    variant = table["method"] + "_" + table["whitening"]
    return table.groupby(variant)["n_seeds"].min().astype(int).to_dict()


def _shown(verdict: str) -> str:
    """claim.csv's verdict with the variants' legend names ('topk_pca higher' -> 'TopK + PCA
    higher')."""
    for name, shown in PAIR_NAMES.items():
        verdict = verdict.replace(name, shown)
    return verdict


def _no_verdict(seeds: dict[str, int], second: str) -> str | None:
    """Why no verdict is stated for ICFL + PCA against ``second`` (too few seeds), or None."""
    fewest = min(seeds.get("icfl_pca", 0), seeds.get(second, 0))
    if fewest < MIN_SEEDS:
        return f"no verdict ({fewest} seed(s), fewer than {MIN_SEEDS})"
    return None


def _stated(verdict: str, seeds: dict[str, int], second: str) -> str:
    """The verdict with variant names shown, or why none is stated."""
    return _no_verdict(seeds, second) or _shown(verdict)


CLAIM_KEY = ["task", "score", "sparsity", "first", "second"]


def _other_run(root: Path) -> Path:
    return Path(root).parent / "compare" / OTHER_MACHINE


def _both_runs(root: Path, dataset: str) -> pd.DataFrame | None:
    """The snapshot's claim rows beside those of the run with other numerical kernels
    (docs/compare/emulated_machine; columns suffixed _a and _b), or None without that run."""
    other = _other_run(root)
    if not Path(ResultsLayout(other).table("claim.csv", dataset)).exists():
        return None
    return _read(root, dataset, "claim.csv").merge(
        _read(other, dataset, "claim.csv"), on=CLAIM_KEY, suffixes=("_a", "_b"),
        validate="one_to_one",
    )  # fmt: skip


def claim_block(root: Path, dataset: str, sparsity: int | None = DEMO_SPARSITY) -> str:
    """Per task and pair, ICFL + PCA minus the other under each metric, with its verdict; then
    the labels above null per variant (mean over seeds)."""
    claim = _read(root, dataset, "claim.csv")
    if sparsity is not None and sparsity in set(claim["sparsity"]):
        claim = claim[claim["sparsity"] == sparsity]
    seeds = _seeds(root, dataset, sparsity)

    def cell(row: pd.Series) -> str:
        verdict = _stated(row["verdict"], seeds, row["second"])
        return f"{row['mean_difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] {verdict}"

    rows = []
    for (task, k, second), group in claim.groupby(["task", "sparsity", "second"], sort=False):
        by_score = group.set_index("score")
        cells = [cell(by_score.loc[s]) if s in by_score.index else "-" for s in METRICS]
        rows.append([f"{task} ({k})", PAIR_NAMES.get(second, second), *cells])
    lines = _table(["task (k)", "ICFL + PCA minus", *METRICS.values()], rows, "ll" + "l" * 4)

    scores = _read(root, dataset, "label_scores.csv")
    held = scores[scores["score"] == "heldout_avg"]
    if sparsity is not None and sparsity in set(held["sparsity"]):
        held = held[held["sparsity"] == sparsity]
    above = (
        held.groupby(["task", "method", "whitening", "seed"])["above_null"]
        .agg(["sum", "size"])
        .groupby(["task", "method", "whitening"])
        .mean()
    )
    rows = []
    for task in dict.fromkeys(held["task"]):
        values = []
        for method, whitening in VARIANTS:
            key = (task, method, whitening)
            values.append(
                f"{above.loc[key, 'sum']:.1f} / {above.loc[key, 'size']:.0f}"
                if key in above.index
                else "-"
            )
        rows.append([task, *values])
    lines += [
        "",
        "Labels whose held-out best feature is above null (mean over seeds, of the task's labels):",
        "",
        *_table(["task", *VARIANT_NAMES.values()], rows, "lrrrr"),
        "",
        _source(dataset, "claim.csv", "label_scores.csv"),
    ]
    return "\n".join(lines)


def _marked(score: str, unstable: bool) -> str:
    """'(b)', or '(b)*' where the other run's verdict differs."""
    return METRICS[score].split(" ")[0] + ("*" if unstable else "")


def verdict_block(root: Path, sparsity: int = DEMO_SPARSITY) -> str:
    """Per dataset and pair, how many task x metric comparisons name a side, and which (the
    metrics per side); none is stated where a variant has fewer than ``MIN_SEEDS`` seeds."""
    lines = []
    for dataset in DATASETS:
        claim = _read(root, dataset, "claim.csv")
        claim = claim[claim["sparsity"] == sparsity]
        seeds = _seeds(root, dataset, sparsity)
        both = _both_runs(root, dataset)
        unstable = set()  # (task, score, second) whose verdict differs on the other run
        if both is not None:
            flipped = both[
                (both["sparsity"] == sparsity) & (both["verdict_a"] != both["verdict_b"])
            ]
            unstable = set(zip(flipped["task"], flipped["score"], flipped["second"], strict=True))
        for second, rows in claim.groupby("second", sort=False):
            head = f"- **{dataset}**, ICFL + PCA vs {PAIR_NAMES.get(second, second)}: "
            if why := _no_verdict(seeds, second):
                lines.append(head + why + ".")
                continue
            named = rows[rows["verdict"] != "no difference"]
            where = "; ".join(
                f"{task} under "
                + ", ".join(_marked(s, (task, s, second) in unstable) for s in g["score"])
                + f": {_stated(verdict, seeds, second)}"
                for (task, verdict), g in named.groupby(["task", "verdict"], sort=False)
            )
            lines.append(
                head
                + f"{len(named)} of {len(rows)} task x metric comparisons name a side"
                + (f" ({where})" if where else "")
                + "."
            )
    if _other_run(root).exists():
        lines += [
            "",
            "\\* not the same verdict in the run with other numerical kernels "
            "([What another machine changes](#what-another-machine-changes)).",
        ]
    return "\n".join(lines)


def null_block(root: Path, sparsity: int = DEMO_SPARSITY) -> str:
    """What chance gives the best of M features: the null's 95th percentile per task."""
    rows = []
    for dataset in DATASETS:
        scores = _read(root, dataset, "label_scores.csv")
        scores = scores[scores["sparsity"] == sparsity]
        for task, g in scores.groupby("task", sort=False):
            ins = g[g["score"] == "insample_avg"]
            held = g[g["score"] == "heldout_avg"]
            rows.append(
                [
                    dataset,
                    task,
                    f"{ins['null_p95'].median():.3f}",
                    f"{held['null_p95'].median():.3f}",
                    f"{ins['value'].median():.3f}",
                    f"{held['value'].median():.3f}",
                ]
            )
    lines = _table(
        [
            "dataset",
            "task",
            "null p95, in-sample (median)",
            "null p95, held out (median)",
            "best feature, in-sample (median)",
            "best feature, held out (median)",
        ],
        rows,
        "llrrrr",
    )
    return "\n".join(
        [
            *lines,
            "",
            f"Medians over labels, models and seeds at k = {sparsity}. "
            + "From "
            + ", ".join(_link(d, "label_scores.csv") for d in DATASETS)
            + ".",
        ]
    )


HEADLINE_COLUMNS = {
    "synthetic": {
        "atom_recovery_model": "atoms recovered (model space)",
        "atom_recovery_original": "atoms recovered (original space)",
        "dead_features": "dead features",
        "recon_cosine": "recon. cosine (held out)",
        "n_features_above_null": "features above null",
        "heldout_avg_perturbation": "held-out best sel., perturbations",
        "bta_perturbation": "BTA perturbation",
        "bta_batch": "BTA batch",
    },
    "pbmc": {
        "recon_cosine": "recon. cosine (held out)",
        "dead_features": "dead features",
        "heldout_avg_bulk_labels": "held-out best sel., bulk labels",
        "labels_above_null_bulk_labels": "bulk labels above null (fraction)",
        "bta_bulk_labels": "BTA bulk labels",
        "bta_louvain": "BTA louvain",
    },
    "cellpainting": {
        "recon_cosine": "recon. cosine (held out)",
        "dead_features": "dead features",
        "heldout_avg_gene_group": "held-out best sel., gene groups",
        "labels_above_null_gene_group": "gene groups above null (fraction)",
        "bta_gene_group": "BTA gene group",
        "bta_cell_type": "BTA cell type",
        "bta_batch": "BTA batch",
    },
}


def headline_block(root: Path, dataset: str) -> str:
    """Per variant and sparsity, mean +/- sd over model seeds; raw tokens' BTA below."""
    table = _read(root, dataset, "headline_seeds.csv")
    columns = {c: n for c, n in HEADLINE_COLUMNS[dataset].items() if c in table}
    rows = []
    for _, r in table.iterrows():
        name = VARIANT_NAMES[(r["method"], r["whitening"])]
        cells = [
            _pm(r[c], r.get(f"{c}_sd", np.nan), 1 if c.startswith(("dead", "n_")) else 3)
            for c in columns
        ]
        rows.append([name, int(r["sparsity"]), int(r["n_seeds"]), *cells])
    probing = _read(root, dataset, "probing.csv")
    raw = probing[probing["representation"] == "raw"].groupby("task")["bta"].mean()
    raw_cells = [
        f"{raw[c.removeprefix('bta_')]:.3f}" if c.startswith("bta_") else "" for c in columns
    ]
    rows.append(["raw tokens", "", "", *raw_cells])
    lines = _table(["model", "k", "seeds", *columns.values()], rows, "lrr" + "r" * len(columns))
    return "\n".join(
        [*lines, "", "mean +/- sd over model seeds. " + _source(dataset, "headline_seeds.csv",
                                                                 "probing.csv")]
    )  # fmt: skip


def _seed_columns(table: pd.DataFrame, method: str, whitening: str) -> list[str]:
    pattern = Variant.pattern()
    return [
        c
        for c in table
        if (found := pattern.match(str(c)))
        and (found["method"], found["whitening"]) == (method, whitening)
    ]


def screen_groups_block(root: Path) -> str:
    """Per planted gene group: the oracle, the linear reference, the raw-token probe's recall,
    and each variant's held-out best avg selectivity (mean +/- sd over seeds) with the seeds
    whose best feature is above null."""
    detect = _read(root, "cellpainting", "group_detectability.csv").set_index("label")
    scores = _read(root, "cellpainting", "label_scores.csv")
    scores = scores[scores["task"] == "gene_group"]
    rows = []
    for label in detect.index:
        d = detect.loc[label]
        cells = [
            f"{d['oracle_selectivity']:.2f}",
            f"{d['linear_reference']:.2f} [{d['linear_reference_low']:.2f}]",
            f"{d['raw_probe_recall']:.2f} vs {d['chance']:.2f}",
        ]
        for method, whitening in VARIANTS:
            held = scores[
                (scores["label"] == label)
                & (scores["method"] == method)
                & (scores["whitening"] == whitening)
                & (scores["score"] == "heldout_avg")
            ]
            per_seed = held.groupby("seed")["value"].mean()
            above = held.groupby("seed")["above_null"].any().sum()
            cells.append(
                f"{_pm(per_seed.mean(), per_seed.std(ddof=1), 2)} ({above} of {len(per_seed)})"
            )
        rows.append([label, *cells])
    lines = _table(
        [
            "gene group",
            "oracle",
            "linear reference [low]",
            "raw-token probe recall vs chance",
            *(f"{n}: held out (seeds above null)" for n in VARIANT_NAMES.values()),
        ],
        rows,
        "lrrrrrrr",
    )
    return "\n".join(
        [
            *lines,
            "",
            "Held-out best selectivity per model seed, mean +/- sd over seeds; in brackets the "
            "seeds whose held-out best feature is above null (FDR 0.05). "
            + _source("cellpainting", "group_detectability.csv", "label_scores.csv"),
        ]
    )


def heatmap_block(root: Path) -> str:
    """Which channel a gene group's feature attributes to, against the planted channel: by the
    heatmap's |r| with each channel (the paper's Fig. 5, and the paper map's column) and by r
    against the controls' r (what the group changes)."""
    table = _read(root, "cellpainting", "heatmap_channel_summary.csv")
    # The channels' r columns: each has an "_vs_control" twin (as do some summary columns).
    channels = [
        c for c in table if f"{c}_vs_control" in table and not c.startswith(("expected_", "top_"))
    ]
    abs_rank = table[channels].abs().rank(axis=1, ascending=False, method="min")
    table = table.assign(
        rank_abs=[abs_rank.loc[i, c] for i, c in table["expected_channel"].items()]
    )
    rows = [
        [
            r["label"],
            int(r["feature"]),
            r["expected_channel"],
            r["top_abs_channel"],
            int(r["rank_abs"]),
            r["top_channel_vs_control"],
            int(r["expected_rank_vs_control"]),
        ]
        for _, r in table.iterrows()
    ]
    lines = _table(
        [
            "gene group",
            "feature",
            "planted channel",
            "top channel by abs(r)",
            "planted channel's rank by abs(r)",
            "top channel, r vs controls",
            "planted channel's rank vs controls",
        ],
        rows,
        "lrllrlr",
    )
    first = int(table["expected_is_top_abs"].sum())
    first_vs_control = int(table["expected_is_top_vs_control"].sum())
    return "\n".join(
        [
            *lines,
            "",
            f"The planted channel ranks first for {first} of {len(table)} groups by abs(r) and "
            f"for {first_vs_control} against the controls. One model (the first ICFL + PCA "
            "model), so no comparison between methods. "
            + _source("cellpainting", "heatmap_channel_summary.csv"),
        ]
    )


def single_cell_block(root: Path) -> str:
    table = _read(root, "cellpainting", "single_cell_summary.csv")
    table = table[table["comparison"] == "perturbed > unperturbed"]
    rows = [
        [
            r["label"],
            int(r["feature"]),
            f"{int(r['n_greater'])} / {int(r['n_lesser'])}",
            f"{r['p_value']:.3g}",
            r["stars"],
            f"{r['recall']:.2f} vs {r['recall_by_chance']:.2f}",
        ]
        for _, r in table.iterrows()
    ]
    lines = _table(
        [
            "gene group",
            "feature",
            "cells perturbed / unperturbed",
            "one-sided Mann-Whitney p",
            "",
            "recall vs chance",
        ],
        rows,
        "lrrrll",
    )
    below = int((table["p_value"] < 0.05).sum())
    return "\n".join(
        [
            *lines,
            "",
            "One-sided test that perturbed cells align more with the feature than unperturbed "
            f"ones (paper Table 3): p < 0.05 for {below} of {len(table)} groups, uncorrected for "
            "the groups tested; one model (the first ICFL + PCA model). "
            + _source("cellpainting", "single_cell_summary.csv"),
        ]
    )


def cp_block(root: Path) -> str:
    """CellProfiler vs each dictionary: Pearson r of per-label best avg selectivity."""
    table = _read(root, "cellpainting", "cp_correlation.csv")
    parts = table["variant"].str.extract(Variant.pattern())
    table = table.assign(method=parts["method"], whitening=parts["whitening"])
    rows = []
    for method, whitening in VARIANTS:
        g = table[(table["method"] == method) & (table["whitening"] == whitening)]
        if g.empty:
            continue
        dictionary = g["mean_best_avg_dictionary"]
        per_seed = "; ".join(
            f"{r['pearson_r']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" for _, r in g.iterrows()
        )
        rows.append(
            [
                VARIANT_NAMES[(method, whitening)],
                _pm(g["pearson_r"].mean(), g["pearson_r"].std(ddof=1), 2),
                per_seed,
                f"{g['mean_best_avg_cp'].mean():.2f} / "
                + _pm(dictionary.mean(), dictionary.std(ddof=1), 2),
            ]
        )
    sparsity = _read(root, "cellpainting", "cp_sparsity.csv")
    cp = sparsity[sparsity["method"] == "CellProfiler"]
    curve = ", ".join(
        f"{r['mean_best_avg']:.2f} at {r['mean_active']:.0f}" for _, r in cp.iterrows()
    )
    lines = _table(
        [
            "dictionary",
            "Pearson r, mean +/- sd over seeds",
            "per seed [95% CI]",
            "mean best avg: CellProfiler / dictionary",
        ],
        rows,
        "lrll",
    )
    n = int(table["n_labels"].iloc[0])
    return "\n".join(
        [
            *lines,
            "",
            f"{n} labels. CellProfiler's mean best avg selectivity by mean active features per "
            f"image: {curve}. " + _source("cellpainting", "cp_correlation.csv", "cp_sparsity.csv"),
        ]
    )


def go_block(root: Path) -> str:
    table = _read(root, "cellpainting", "go_recovery_summary.csv")
    rows = [
        [
            r["variant"],
            f"{int(r['recovered'])} of {int(r['groups'])}",
            f"{int(r['recovered_strict'])} of {int(r['groups'])}",
            f"{r['mean_precision']:.2f}",
            f"{100 * r['chance']:.0f}%",
        ]
        for _, r in table.iterrows()
    ]
    lines = _table(
        ["model", "recovered (identical-term ties allowed)", "strict", "mean precision", "chance"],
        rows,
        "lrrrr",
    )
    return "\n".join(
        [
            *lines,
            "",
            "One model seed per variant (seed 0): a count, not a verdict between methods. "
            + _source("cellpainting", "go_recovery_summary.csv"),
        ]
    )


def pbmc_go_block(root: Path, fdr: float = 0.05) -> str:
    table = _read(root, "pbmc", "enrichment_labels.csv")
    rows = []
    for label, g in table.groupby("label", sort=False):
        hit = g[g["top_fdr"] < fdr]
        common = hit["top_term"].value_counts()
        rows.append(
            [
                label,
                f"{len(hit)} of {len(g)}",
                "; ".join(f"{term} ({n})" for term, n in common.head(3).items()) or "-",
                f"{g['top_fdr'].min():.2g}",
            ]
        )
    lines = _table(
        ["cell type", f"models with a top term at FDR < {fdr}", "top terms (models)", "best FDR"],
        rows,
        "lrlr",
    )
    return "\n".join([*lines, "", _source("pbmc", "enrichment_labels.csv")])


def machine_block(root: Path) -> str:
    """Which claim verdicts of the snapshot hold in the same demo run with other numerical
    kernels (docs/compare/emulated_machine), per dataset, and the ones that flip."""
    other = _other_run(root)
    m = meta(other)
    env = ", ".join(f"`{k}={v}`" for k, v in m["environment"].items()) or "none"
    rows, flips = [], []
    for dataset in DATASETS:
        both = _both_runs(root, dataset)
        if both is None:
            claim = ResultsLayout(other).table("claim.csv", dataset)
            raise FileNotFoundError(f"{claim}: the other run lacks it")
        named_a = both["verdict_a"] != "no difference"
        named_b = both["verdict_b"] != "no difference"
        same = both["verdict_a"] == both["verdict_b"]
        rows.append(
            [
                dataset,
                len(both),
                int(named_a.sum()),
                int((named_a & same).sum()),
                int((~named_a & named_b).sum()),
                int((named_a & ~same).sum()),
            ]
        )
        for _, r in both[~same].iterrows():
            flips.append(
                f"- {dataset}, {r['task']} (k = {r['sparsity']}), {METRICS[r['score']]}, ICFL + "
                f"PCA minus {PAIR_NAMES.get(r['second'], r['second'])}: "
                f"{r['mean_difference_a']:+.3f} [{r['low_a']:+.3f}, {r['high_a']:+.3f}] "
                f"{_shown(r['verdict_a'])} -> "
                f"{r['mean_difference_b']:+.3f} [{r['low_b']:+.3f}, {r['high_b']:+.3f}] "
                f"{_shown(r['verdict_b'])}"
            )
    lines = [
        f"The other run: commit {m['commit']}, {m['date']}, `{m['command']}` with {env}; "
        f"{_minutes(m['wall_seconds'])}. Its tables: [docs/compare/{OTHER_MACHINE}/]"
        f"(compare/{OTHER_MACHINE}/).",
        "",
        *_table(
            [
                "dataset",
                "claim comparisons (all k)",
                "sides named in the snapshot",
                "of them the same on the other run",
                "no difference -> a side",
                "a side -> no difference or the other side",
            ],
            rows,
            "lrrrrr",
        ),
        "",
        "Verdicts that differ between the two runs:",
        "",
        *(flips or ["- none"]),
    ]
    return "\n".join(lines)


def paper_snapshot_block(root: Path) -> str:
    from cellconcepts.report.paper_map import build_map, snapshot_markdown

    m = meta(root)
    head = (
        f"Commit {m['commit']}, {m['date']}, `{m['command']}` on `config/config.yaml`; "
        f"{m['machine']}, Python {m['python']}, torch {m['torch']}."
    )
    return head + "\n\n" + snapshot_markdown(build_map(Path(root), list(DATASETS))).rstrip("\n")


BLOCKS: dict[str, Callable[[Path], str]] = {
    "run": run_block,
    "verdicts": verdict_block,
    "nulls": null_block,
    **{f"claim:{d}": (lambda root, d=d: claim_block(root, d)) for d in DATASETS},
    **{f"headline:{d}": (lambda root, d=d: headline_block(root, d)) for d in DATASETS},
    "screen_groups": screen_groups_block,
    "heatmaps": heatmap_block,
    "single_cells": single_cell_block,
    "cellprofiler": cp_block,
    "go_recovery": go_block,
    "pbmc_go": pbmc_go_block,
    "machine": machine_block,
    "paper_snapshot": paper_snapshot_block,
}


# --- the docs ------------------------------------------------------------------------------


def fill(text: str, root: Path, *, doc: str = "doc") -> str:
    """``text`` with every generated block rewritten from the snapshot at ``root``."""

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise KeyError(f"{doc}: unknown generated block {name!r}; known: {sorted(BLOCKS)}")
        return f"{match.group(1)}{BLOCKS[name](root)}\n{match.group(4)}"

    return _BLOCK.sub(replace, text)


def block_names(text: str) -> list[str]:
    return [m["name"] for m in _BLOCK.finditer(text)]


def update_docs(root: Path = SNAPSHOT, docs: Sequence[Path] = DOCS, *, check: bool) -> list[Path]:
    """Rewrite (or, with ``check``, only compare) the generated blocks; returns stale docs."""
    stale = []
    for doc in docs:
        text = doc.read_text()
        new = fill(text, root, doc=str(doc))
        if new != text:
            stale.append(doc)
            if not check:
                doc.write_text(new)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot", help="copy a finished run's tables into docs/snapshot")
    snap.add_argument("results", type=Path)
    snap.add_argument("--out", type=Path, default=SNAPSHOT)
    snap.add_argument("--wall-seconds", type=float, required=True)
    snap.add_argument("--jobs", type=int, required=True)
    snap.add_argument("--date", help="the run's date (default: today, UTC)")
    snap.add_argument(
        "--env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="environment variables the run was made with (e.g. ATEN_CPU_CAPABILITY=default)",
    )
    claim = sub.add_parser("claim", help="print the claim tables of any results folder")
    claim.add_argument("results", type=Path)
    claim.add_argument("--sparsity", type=int, default=DEMO_SPARSITY)
    docs = sub.add_parser("docs", help="rewrite the generated blocks of the docs")
    docs.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    docs.add_argument("--check", action="store_true", help="only report stale docs (exit 1)")
    docs.add_argument("docs", nargs="*", type=Path, default=list(DOCS))
    args = parser.parse_args(argv)
    if args.command == "snapshot":
        environment = dict(item.split("=", 1) for item in args.env)
        meta = take_snapshot(
            args.results,
            args.out,
            wall_seconds=args.wall_seconds,
            jobs=args.jobs,
            started=args.date,
            environment=environment,
        )
        print(json.dumps(meta, indent=2))  # fmt: skip
        return 0
    if args.command == "claim":
        for folder in sorted(
            p for p in args.results.iterdir() if (p / "tables/claim.csv").exists()
        ):
            print(f"**{folder.name}**\n\n{claim_block(args.results, folder.name, args.sparsity)}\n")
        return 0
    stale = update_docs(args.snapshot, args.docs, check=args.check)
    for doc in stale:
        print(f"{doc}: generated blocks {'differ from' if args.check else 'rewritten from'} "
              f"{args.snapshot}", file=sys.stderr)  # fmt: skip
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
