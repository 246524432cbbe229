"""The paper map: each figure and table of the papers, the paper's number, and this run's number
read from the table that holds it.

``ENTRIES`` is the map's one home: which results file, column and rows give each number, and the
paper's number beside it. Rule ``paper_map`` writes ``results/paper_map.csv`` and ``.md`` from it
(`build_map`, `map_markdown`); docs/paper.md holds the same map without run numbers
(`docs_markdown`). A table that lacks a column an entry names stops the rule, naming the file and
the column; a dataset, table or row selection not in this run is written as "not in this run".

Numbers: the mean over the selected rows, with the standard deviation and the number of rows
(``per``: first the mean within each value of that column, e.g. over the labels of one model,
then mean and sd over those means); text columns give their distinct values.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cellconcepts.variant import Variant

SCREEN, SYNTHETIC, PBMC = "cellpainting", "synthetic", "pbmc"
NOT_IN_RUN = "not in this run"

# What each paper item shows, in the paper's order (numbering of ../shared/seeds/001_*).
ITEMS: dict[str, str] = {
    "Table 1": "dead features (activated in < 1e-5 of the last 1000 steps), ICFL / TopK x PCA",
    "Task table": "per probing task: classes, BTA, features with avg selectivity > 0.5 / > 0.2 "
    "for at least one label (M = 8192; unnumbered in the seeds, which do not name its model; "
    "the map reads ICFL + PCA)",
    "Fig. 2A": "best avg selectivity per label, CellProfiler vs ICFL",
    "Fig. 2B": "selectivity averaged over labels vs mean number of active features",
    "Fig. 2C": "correlation of per-label best selectivity, CellProfiler vs ICFL",
    "Fig. 3": "cosine of tokens with the feature direction, own perturbation vs others",
    "Fig. 4A": "probe BTA on reconstructions vs raw tokens, five tasks",
    "Fig. 4B": "BTA vs sparsity (dashed: raw tokens)",
    "Fig. 4C": "held-out reconstruction cosine vs sparsity",
    "Fig. 5": "token heatmaps; the channel that correlates most with the heatmap",
    "Fig. 6A-D": "composite and actin images, segmented cells, heatmaps of an adherens-junction "
    "feature",
    "Fig. 6E": "alignment of perturbed, unperturbed and background segments (Mann-Whitney)",
    "Table 3": "'control' recall: unperturbed cells among the dark (low-alignment) cells",
    "Fig. 7": "decoding tokens from intermediate layers; probes in null / row space",
    "Fig. 8": "highest selectivity per label, per model",
    "Claim": "'ICFL and PCA significantly improve the selectivity ... compared to TopK SAEs'",
    "Recovery (scRNA paper)": "SAE features recover the simulation's hidden variables",
    "scFeatureLens": "GO enrichment of each feature's genes",
}

# The figure that shows an item, under results/<dataset>/ (the map's target builds the table).
FIGURES: dict[str, str] = {
    "Table 1": "tables/dead_features.csv",
    "Fig. 2A": "figures/cp_comparison.png",
    "Fig. 2B": "figures/cp_comparison.png",
    "Fig. 2C": "figures/cp_comparison.png",
    "Fig. 3": "figures/feature_cosines.png",
    "Fig. 4A": "figures/probing_bta.png",
    "Fig. 4B": "figures/sparsity.png",
    "Fig. 4C": "figures/sparsity.png",
    "Fig. 5": "figures/token_heatmaps.png",
    "Fig. 6A-D": "figures/token_heatmaps.png",
    "Fig. 6E": "figures/single_cell_alignment.png",
    "Fig. 7": "figures/layer_probe.png",
    "Fig. 8": "figures/best_selectivity.png",
}

# Tables that only some configs build, with what they need (the rule file's predicates).
TABLE_NEEDS: dict[str, str] = {
    "tables/cp_comparison.csv": "cellprofiler",
    "tables/cp_correlation.csv": "cellprofiler",
    "tables/cp_sparsity.csv": "cellprofiler",
    "tables/heatmap_channel_summary.csv": "heatmaps",
    "tables/single_cell_summary.csv": "screen_heatmaps",
    "tables/single_cell_images.csv": "screen_heatmaps",
    "tables/layer_probe.csv": "microscopy",
    "tables/go_recovery_summary.csv": "screen_enrichment",
    "tables/enrichment_labels.csv": "enrichment",
    "tables/atom_recovery.csv": "ground_truth",
}

MODEL_NAMES = {
    ("icfl", "pca"): "ICFL + PCA",
    ("icfl", "none"): "ICFL",
    ("topk", "pca"): "TopK + PCA",
    ("topk", "none"): "TopK",
}


@dataclass(frozen=True)
class Entry:
    """One paper quantity and where this run holds it.

    ``where``: column -> value, list of values, or a glob (``"icfl_pca_*"``); ``by``: one map row
    per distinct value (``model`` and ``k`` are derived from method / whitening / sparsity or a
    variant name); ``paper``: the paper's number, or one per ``by`` value ("-" where none);
    ``per``: average within each value of this column first; ``of``: a column shown as "of N".
    """

    item: str
    quantity: str
    paper: str | Mapping[str, str]
    dataset: str | None
    file: str | None
    column: str | None = None
    where: Mapping[str, object] = field(default_factory=dict)
    by: Sequence[str] = ()
    per: str | None = None
    of: str | None = None
    digits: int = 3
    note: str = ""


DEAD_PAPER = {
    "ICFL": "55 of 8192",
    "ICFL + PCA": "341 of 8192",
    "TopK": "7640 of 8192",
    "TopK + PCA": "8026 of 8192",
}
# The paper's task table: (paper task, classes, BTA, > 0.5, > 0.2) -> the screen's task.
TASK_TABLE = [
    ("cell type", "23", "97.2%", "73", "455", "cell_type"),
    ("batch", "272", "87.8%", "11", "77", "batch"),
    ("siRNA", "1138", "51.6%", "0", "141", "gene"),
    ("CRISPR (5 strong)", "5", "94.6%", "0", "2", "strong"),
    ("gene group", "39", "32.1%", "0", "37", "gene_group"),
]
ICFL_PCA = {"method": "icfl", "whitening": "pca"}
RECON = {"representation": ["reconstruction", "raw"]}
CLAIM_PAPER = "ICFL + PCA higher (significantly)"


def _entries() -> list[Entry]:
    e: list[Entry] = []
    for dataset, where in ((SCREEN, {}), (SYNTHETIC, {}), (PBMC, {"sparsity": 8})):
        e.append(
            Entry("Table 1", "dead features", DEAD_PAPER, dataset, "tables/dead_features.csv",
                  "dead_features", where, by=("model",), of="n_features", digits=1)
        )  # fmt: skip
    for task, classes, bta, above5, above2, demo in TASK_TABLE:
        q = f"{task} -> task {demo}:"
        e += [
            Entry("Task table", f"{q} classes", classes, SCREEN, "tables/probing.csv",
                  "n_classes", {"task": demo, "representation": "raw"}, digits=0),
            Entry("Task table", f"{q} BTA, ICFL + PCA reconstructions", bta, SCREEN,
                  "tables/probing.csv", "bta",
                  {"task": demo, "representation": "reconstruction", **ICFL_PCA}),
            Entry("Task table", f"{q} features > 0.5, ICFL + PCA", above5, SCREEN,
                  "tables/selectivity_counts.csv", "n_features_sel_0.5",
                  {"task": demo, **ICFL_PCA}, digits=1),
            Entry("Task table", f"{q} features > 0.2, ICFL + PCA", above2, SCREEN,
                  "tables/selectivity_counts.csv", "n_features_sel_0.2",
                  {"task": demo, **ICFL_PCA}, digits=1),
        ]  # fmt: skip
    e += [
        Entry("Fig. 2A", "mean over labels of the best avg selectivity, CellProfiler",
              "CellProfiler above ICFL for most labels", SCREEN, "tables/cp_correlation.csv",
              "mean_best_avg_cp", {"variant": "icfl_pca_*_seed0"}),  # one value, not per seed
        Entry("Fig. 2A", "mean over labels of the best avg selectivity, dictionary", "-",
              SCREEN, "tables/cp_correlation.csv", "mean_best_avg_dictionary", by=("model",)),
        Entry("Fig. 2B", "CellProfiler, by mean active features per image",
              "ICFL approaches CellProfiler as k grows", SCREEN, "tables/cp_sparsity.csv",
              "mean_best_avg", {"method": "CellProfiler"}, by=("mean_active",)),
        Entry("Fig. 2B", "dictionary, mean best avg selectivity", "-", SCREEN,
              "tables/cp_sparsity.csv", "mean_best_avg", {"method": "*_seed*"},
              by=("model", "k")),
        Entry("Fig. 2C", "Pearson r of per-label best avg selectivity, CellProfiler vs model",
              {"ICFL + PCA": "0.71"}, SCREEN, "tables/cp_correlation.csv", "pearson_r",
              by=("model",)),
        Entry("Fig. 2C", "labels correlated", "-", SCREEN, "tables/cp_correlation.csv",
              "n_labels", {"variant": "icfl_pca_*_seed0"}, digits=0),
    ]  # fmt: skip
    for dataset in (SCREEN, SYNTHETIC, PBMC):
        e.append(
            Entry("Fig. 3", "AUC own vs other tokens, first ICFL + PCA model, per label",
                  "own-perturbation tokens shifted towards the feature", dataset,
                  "tables/feature_cosines.csv", "auc_own_vs_other", by=("label",))
        )  # fmt: skip
    for task in ("cell_type", "batch", "gene", "strong", "gene_group"):
        e.append(
            Entry("Fig. 4A", f"BTA, task {task}, reconstructions and raw tokens",
                  "most signal kept for cell type, batch, strong; subtle ones drop", SCREEN,
                  "tables/probing.csv", "bta", {"task": task, **RECON}, by=("model",))
        )  # fmt: skip
    e += [
        Entry("Fig. 4B", "BTA, task bulk_labels, reconstructions", "more non-zeros help, less "
              "than PCA whitening", PBMC, "tables/probing.csv", "bta",
              {"task": "bulk_labels", "representation": "reconstruction"}, by=("model", "k")),
        Entry("Fig. 4B", "BTA, task bulk_labels, raw tokens (dashed line)", "-", PBMC,
              "tables/probing.csv", "bta", {"task": "bulk_labels", "representation": "raw"}),
        Entry("Fig. 4C", "held-out reconstruction cosine", "rises with k; TopK without PCA "
              "probably better", PBMC, "tables/reconstruction.csv", "recon_cosine",
              by=("model", "k")),
    ]  # fmt: skip
    fig5 = {
        "mito_enlarged": "mitochondria (OPA1)",
        "er_expansion": "ER (ALG3)",
        "large_cells": "membrane / Golgi, negative (TSC2)",
        "small_clumped": "negative in all channels (PLK1)",
    }
    e += [
        Entry("Fig. 5", "channel with the largest |r| (heatmap vs channel), per gene group",
              fig5, SCREEN, "tables/heatmap_channel_summary.csv", "top_abs_channel",
              by=("label",)),
        Entry("Fig. 6A-D", "r of the actin channel with the adherens-junction feature's "
              "heatmap (6B); images: token_heatmaps.png, column actin_junctions (6A, 6D)",
              "strong correlation with the actin channel", SCREEN,
              "tables/heatmap_channel_summary.csv", "actin", {"label": "actin_junctions"}),
        Entry("Fig. 6A-D", "cells in the actin_junctions heatmap images (6C: the simulator's "
              "masks classify them; no figure of the segments)", "-", SCREEN,
              "tables/single_cell_images.csv", "total_cells",
              {"label": "actin_junctions", "image_id": "all"}, digits=0),
        Entry("Fig. 6E", "one-sided Mann-Whitney p, perturbed > unperturbed",
              {"actin_junctions": "p < 0.0001"}, SCREEN, "tables/single_cell_summary.csv",
              "p_value", {"comparison": "perturbed > unperturbed"}, by=("label",)),
        Entry("Fig. 6E", "one-sided Mann-Whitney p, perturbed > background", "-", SCREEN,
              "tables/single_cell_summary.csv", "p_value",
              {"comparison": "perturbed > background"}, by=("label",)),
    ]  # fmt: skip
    sc = {"label": "actin_junctions", "image_id": "all"}
    e += [
        Entry("Table 3", "cells", "124", SCREEN, "tables/single_cell_images.csv",
              "total_cells", sc, digits=0),
        Entry("Table 3", "perturbed cells", "93", SCREEN, "tables/single_cell_images.csv",
              "perturbed", sc, digits=0),
        Entry("Table 3", "unperturbed ('control') cells", "31", SCREEN,
              "tables/single_cell_images.csv", "unperturbed", sc, digits=0),
        Entry("Table 3", "'control' recall", {"actin_junctions": "0.871"}, SCREEN,
              "tables/single_cell_summary.csv", "recall",
              {"comparison": "perturbed > unperturbed"}, by=("label",)),
        Entry("Table 3", "'control' recall by chance", "-", SCREEN,
              "tables/single_cell_summary.csv", "recall_by_chance",
              {"comparison": "perturbed > unperturbed"}, by=("label",)),
        Entry("Fig. 7", "layer chosen by the gene-group probe (decoding and null / row "
              "space: not reproduced)", "16 (MAE-L) / 33 (MAE-G)", SCREEN,
              "tables/layer_probe.csv", "layer", {"task": "gene_group", "chosen": True},
              digits=0),
    ]  # fmt: skip
    for dataset, task, where in (
        (SYNTHETIC, "perturbation", {}),
        (SCREEN, "gene_group", {}),
        (SCREEN, "gene", {}),
        (PBMC, "bulk_labels", {"sparsity": 8}),
    ):
        e.append(
            Entry("Fig. 8", f"best avg selectivity, mean over {task} labels (sd over seeds)",
                  {"ICFL + PCA": "above TopK"}, dataset, "tables/best_selectivity.csv",
                  "best_avg", {"task": task, **where}, by=("model",), per="seed")
        )  # fmt: skip
    for dataset, task in ((SYNTHETIC, "perturbation"), (SCREEN, "gene_group"),
                          (PBMC, "bulk_labels")):  # fmt: skip
        for score in ("insample_avg", "heldout_avg"):
            where = {"task": task, "score": score, "first": "icfl_pca"}
            if dataset == PBMC:
                where["sparsity"] = 8
            label = "the paper's metric" if score == "insample_avg" else "held out"
            e += [
                Entry("Claim", f"ICFL + PCA minus second, mean over {task} labels ({label})",
                      "-", dataset, "tables/claim.csv", "mean_difference", where,
                      by=("second",)),
                Entry("Claim", f"verdict ({label}; interval over wells and seeds)",
                      CLAIM_PAPER, dataset, "tables/claim.csv", "verdict", where,
                      by=("second",)),
            ]  # fmt: skip
    e += [
        Entry("Recovery (scRNA paper)", "fraction of planted atoms recovered (|cos| > "
              "threshold)", "-", SYNTHETIC, "tables/atom_recovery.csv", "recovered",
              by=("model",), per="seed"),
        Entry("scFeatureLens", "planted GO term ranked first, of the screen's gene groups "
              "(seed 0)", "features map to biological programmes", SCREEN,
              "tables/go_recovery_summary.csv", "recovered", by=("model",), digits=0),
        Entry("scFeatureLens", "top GO term of the most selective feature per label "
              "(first ICFL + PCA, k = 8)", "features map to immune programmes", PBMC,
              "tables/enrichment_labels.csv", "top_term", {"variant": "icfl_pca_k8_seed0"},
              by=("label",)),
        Entry("scFeatureLens", "its FDR", "-", PBMC, "tables/enrichment_labels.csv",
              "top_fdr", {"variant": "icfl_pca_k8_seed0"}, by=("label",)),
    ]  # fmt: skip
    return e


ENTRIES: tuple[Entry, ...] = tuple(_entries())
# Paper items the demo has no number for, and why (listed in the map and docs/paper.md).
UNMAPPED: dict[str, str] = {
    "Fig. 6A-D": "images, not numbers: composite (6A), actin channel (6B) and heatmap (6D) of "
    "the adherens-junction feature are the actin_junctions column of "
    "figures/token_heatmaps.png; no figure draws the segmented, classified cells (6C) or the "
    "ring-like boundaries",
    "Fig. 7": "not reproduced: no image decoding from intermediate layers, no null / row space "
    "probes (only the layer choice)",
    "Task table": "the paper's sample counts per task (110,971 / 80,000 / ...) have no column",
}


def needed_tables(datasets: Sequence[str]) -> list[tuple[str, str]]:
    """(dataset, file under results/<dataset>/) of every table the map reads, for the datasets
    of this run, in map order."""
    seen: dict[tuple[str, str], None] = {}
    for entry in ENTRIES:
        if entry.dataset in datasets and entry.file is not None:
            seen[(entry.dataset, entry.file)] = None
    return list(seen)


def _variant_parts(values: pd.Series) -> pd.DataFrame:
    """Columns method, whitening, sparsity and seed of model names (NaN where not one)."""
    return values.astype(str).str.extract(Variant.pattern())


def _derive(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``model`` ("ICFL + PCA", ..., or the row's method/variant, e.g. "raw"), ``k`` and
    ``seed`` where the table does not have them, from method / whitening / sparsity or from a
    variant name (column ``variant``, or ``method`` where it holds variant names)."""
    table = table.copy()
    source = next(
        (
            c
            for c in ("variant", "method")
            if c in table and _variant_parts(table[c])["method"].notna().any()
        ),
        None,
    )
    parts = _variant_parts(table[source]) if source else None
    if "model" not in table:
        if {"method", "whitening"} <= set(table.columns) and source != "method":
            keys = zip(table["method"].astype(str), table["whitening"].astype(str), strict=True)
            table["model"] = [MODEL_NAMES.get(key, key[0]) for key in keys]
        elif parts is not None:
            names = [
                MODEL_NAMES.get((m, w))
                for m, w in zip(parts["method"], parts["whitening"], strict=True)
            ]
            table["model"] = [n or str(v) for n, v in zip(names, table[source], strict=True)]
    if "k" not in table:
        if "sparsity" in table:
            table["k"] = table["sparsity"]
        elif parts is not None:
            table["k"] = pd.to_numeric(parts["sparsity"])
    if "seed" not in table and parts is not None:
        table["seed"] = pd.to_numeric(parts["seed"])
    return table


def _matches(column: pd.Series, wanted: object) -> pd.Series:
    if isinstance(wanted, (list, tuple)):
        return column.isin(list(wanted))
    if isinstance(wanted, str) and "*" in wanted:
        pattern = re.escape(wanted).replace(r"\*", ".*")
        return column.astype(str).str.fullmatch(pattern)
    return column == wanted


def _selection_text(entry: Entry) -> str:
    parts = [f"{column} = {value}" for column, value in entry.where.items()]
    if entry.by:
        parts.append("per " + " and ".join(entry.by))
    if entry.per:
        parts.append(f"mean within each {entry.per} first")
    return "; ".join(parts)


def _fmt(value: float, digits: int) -> str:
    if value != 0 and abs(value) < 10.0**-digits:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


def _group_label(columns: Sequence[str], key: tuple) -> str:
    labels = []
    for column, value in zip(columns, key, strict=True):
        if column == "k":
            labels.append("raw" if pd.isna(value) else f"k = {int(value)}")
        elif isinstance(value, float) and not float(value).is_integer():
            labels.append(f"{column} {value:.1f}")
        elif isinstance(value, float):
            labels.append(f"{column} {int(value)}")
        else:
            labels.append(str(value))
    return ", ".join(labels)


def _number(rows: pd.DataFrame, entry: Entry, path: Path) -> dict[str, object]:
    """Value, sd and n of the entry's column over ``rows``, and the text of the map cell."""
    values = rows[entry.column]
    if entry.per is not None:
        if entry.per not in rows:
            raise ValueError(f"{path}: no column {entry.per!r} (paper map: {entry.item})")
        values = rows.groupby(entry.per, sort=False, dropna=False)[entry.column].mean()
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        values = values.astype(float)
        value = float(values.mean())
        sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        text = _fmt(value, entry.digits)
        if len(values) > 1:
            text += f" +/- {_fmt(sd, entry.digits)} (n = {len(values)})"
        if entry.of is not None:
            text += f" of {rows[entry.of].mean():g}"
        return {"value": value, "sd": sd, "n": len(values), "demo": text}
    distinct = list(dict.fromkeys(values.astype(str)))
    return {
        "value": float("nan"),
        "sd": float("nan"),
        "n": len(values),
        "demo": " / ".join(distinct),
    }


def _entry_rows(entry: Entry, table: pd.DataFrame | None, path: Path, absent: str) -> list[dict]:
    paper = entry.paper
    base = {
        "item": entry.item,
        "quantity": entry.quantity,
        "dataset": entry.dataset,
        "file": entry.file,
        "column": entry.column,
        "selection": _selection_text(entry),
    }
    if table is None:
        text = paper if isinstance(paper, str) else "; ".join(f"{k}: {v}" for k, v in paper.items())
        return [{**base, "group": "", "paper": text, "value": float("nan"), "sd": float("nan"),
                 "n": 0, "demo": absent}]  # fmt: skip
    table = _derive(table)
    for column in [entry.column, *entry.where, *entry.by, *([entry.of] if entry.of else [])]:
        if column not in table:
            raise ValueError(
                f"{path}: no column {column!r}, which the paper map reads for "
                f"{entry.item} ({entry.quantity}); columns: {', '.join(map(str, table.columns))}"
            )
    keep = pd.Series(True, index=table.index)
    for column, wanted in entry.where.items():
        keep &= _matches(table[column], wanted)
    rows = table[keep]
    if entry.by:
        groups = list(rows.groupby(list(entry.by), sort=False, dropna=False))
    else:
        groups = [((), rows)]
    if rows.empty:
        text = paper if isinstance(paper, str) else "; ".join(f"{k}: {v}" for k, v in paper.items())
        return [{**base, "group": "", "paper": text, "value": float("nan"), "sd": float("nan"),
                 "n": 0, "demo": f"{NOT_IN_RUN} (no rows: {_selection_text(entry)})"}]  # fmt: skip
    out = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = _group_label(entry.by, key)
        own = paper if isinstance(paper, str) else paper.get(label, "-")
        out.append({**base, "group": label, "paper": own, **_number(group, entry, path)})
    return out


MAP_COLUMNS = ["item", "quantity", "group", "paper", "demo", "value", "sd", "n", "dataset",
               "file", "column", "selection", "target"]  # fmt: skip


def build_map(
    results: str | Path,
    datasets: Sequence[str],
    built: Sequence[str] | None = None,
    entries: Sequence[Entry] = ENTRIES,
) -> pd.DataFrame:
    """The map for a run: one row per paper number (per ``by`` value). ``results``: the run's
    results folder; ``datasets``: the run's datasets; ``built``: the tables this config builds,
    as "<dataset>/<file>" (default: those that exist). A table that lacks a named column raises
    ValueError naming the file and the column."""
    results = Path(results)
    rows: list[dict] = []
    cache: dict[Path, pd.DataFrame] = {}
    for entry in entries:
        path = results / str(entry.dataset) / str(entry.file)
        if entry.dataset not in datasets:
            table, absent = None, f"{NOT_IN_RUN} (no dataset {entry.dataset!r})"
        elif built is not None and f"{entry.dataset}/{entry.file}" not in built:
            table, absent = None, f"{NOT_IN_RUN} (this config does not build {entry.file})"
        elif built is None and not path.exists():
            table, absent = None, f"{NOT_IN_RUN} (no {entry.file})"
        else:
            if path not in cache:
                cache[path] = pd.read_csv(path)
            table, absent = cache[path], ""
        for row in _entry_rows(entry, table, path, absent):
            row["target"] = (
                f"snakemake --cores all {results.as_posix()}/{entry.dataset}/{entry.file}"
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=MAP_COLUMNS)


def _cell(text: object) -> str:
    return (
        ""
        if text is None or (isinstance(text, float) and pd.isna(text))
        else str(text).replace("|", "\\|")
    )


def _table_markdown(table: pd.DataFrame, *, targets: bool) -> list[str]:
    header = (
        "| paper | quantity | model / label | paper's number | this run | file (column; rows) |"
    )
    lines = [header + (" build it |" if targets else ""), "| --- " * (7 if targets else 6) + "|"]
    for row in table.itertuples(index=False):
        selection = "" if pd.isna(row.selection) else row.selection
        where = f"`{row.dataset}/{row.file}` ({row.column}" + (
            f"; {selection})" if selection else ")"
        )
        cells = [row.item, row.quantity, row.group, row.paper, row.demo, where]
        if targets:
            cells.append(f"`{row.target}`")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def map_markdown(table: pd.DataFrame, results: str | Path) -> str:
    """The run's map as Markdown: per paper number, the paper's and this run's, file and target."""
    lines = [
        "# The papers' figures and tables in this run",
        "",
        f"Generated by rule `paper_map` from the tables under `{Path(results).as_posix()}/` "
        "(`cellconcepts.report.paper_map`; docs/paper.md explains each row). `+/-`: standard "
        "deviation over the selected rows (n), e.g. model seeds. The demo is small (128-512 "
        "features, k = 8, simulated screen): compare directions and gaps, not values.",
        "",
        *_table_markdown(table, targets=True),
        "",
        "## Not mapped",
        "",
    ]
    lines += [f"- {item}: {why}" for item, why in UNMAPPED.items()]
    return "\n".join(lines) + "\n"


def snapshot_markdown(table: pd.DataFrame) -> str:
    """A run's map for docs/paper.md: the map's table without the targets (the docs map has
    them)."""
    return "\n".join(_table_markdown(table, targets=False)) + "\n"


def docs_markdown(entries: Sequence[Entry] = ENTRIES) -> str:
    """The map without run numbers (docs/paper.md): item, what it shows, file, column, rows,
    target and the paper's number."""
    lines = [
        "| paper | what it shows | quantity | file under `results/` (column; rows) | build it "
        "| paper's number |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    previous = None
    for entry in entries:
        shows = ITEMS[entry.item] if entry.item != previous else ""
        figure = FIGURES.get(entry.item) if entry.item != previous else None
        if figure:
            shows += f" (`{figure}`)"
        previous = entry.item
        paper = entry.paper
        if not isinstance(paper, str):
            paper = "; ".join(f"{k}: {v}" for k, v in paper.items())
        selection = _selection_text(entry)
        where = f"`{entry.dataset}/{entry.file}` ({entry.column}" + (
            f"; {selection})" if selection else ")"
        )
        target = f"`snakemake --cores all results/{entry.dataset}/{entry.file}`"
        cells = [entry.item, shows, entry.quantity, where, target, paper]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += [""]
    lines += [f"- **{item}**: {why}" for item, why in UNMAPPED.items()]
    return "\n".join(lines) + "\n"


def write_map(table: pd.DataFrame, csv: str | Path, md: str | Path, results: str | Path) -> None:
    from cellconcepts.files import atomic_path

    with atomic_path(Path(csv)) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(Path(md)) as tmp:
        Path(tmp).write_text(map_markdown(table, results))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="a run's results folder")
    parser.add_argument("--datasets", nargs="*", help="default: the folders under --results")
    parser.add_argument("--docs", action="store_true", help="print the map for docs/paper.md")
    parser.add_argument(
        "--snapshot", action="store_true", help="print the run's map as docs/paper.md's snapshot"
    )
    args = parser.parse_args(argv)
    if args.docs:
        print(docs_markdown(), end="")
        return
    results = Path(args.results)
    datasets = args.datasets or sorted(p.name for p in results.iterdir() if p.is_dir())
    table = build_map(results, datasets)
    print(snapshot_markdown(table) if args.snapshot else map_markdown(table, results), end="")


if __name__ == "__main__":
    main()
