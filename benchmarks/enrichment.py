"""GO enrichment of every feature of the demo's models: the vectorised stage vs gseapy.enrich.

Needs the demo's codes (run `snakemake --cores all` first). For every model of the pbmc and
cellpainting datasets it times the gene lists (DE or selectivity) and the enrichment of all
lists x all GO BP 2023 terms (as the workflow computes them), then times `gseapy.enrich` one
list at a time on a sample of lists of one model (the usual loop) and prints the ratio.

    python benchmarks/enrichment.py --results results --gseapy-lists 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gseapy
import pandas as pd
import scipy.sparse as sp
import yaml

from cellconcepts.config import deep_merge, enrichment_mode
from cellconcepts.enrich import genesets
from cellconcepts.enrich import statistics as enrich
from cellconcepts.enrich.gene_lists import feature_gene_lists
from cellconcepts.store.tokens import TokenStore

SCHEMA_DEFAULTS = {
    "expression": {
        "matrix": "raw",
        "active_percentile": 50,
        "min_cells": 10,
        "de_method": "welch",
        "de_fdr": 0.05,
        "min_log2_fold_change": 1.0,
    },
    "screen": {"gene_column": "gene", "min_selectivity": 0.2, "top_n": 5},
    "min_term_size": 10,
    "max_term_size": 500,
}


def gene_lists_of(config: dict, dataset: str, codes: sp.csr_matrix, obs: pd.DataFrame):
    """The workflow's own gene lists for one model, with the demo config's settings."""
    ds = config["datasets"][dataset]
    settings = deep_merge(deep_merge(SCHEMA_DEFAULTS, config["enrich"]), ds.get("enrich", {}))
    source = ds.get("scrna", {}).get("source")
    mode = enrichment_mode(ds["kind"])
    lists = feature_gene_lists(
        mode, codes, obs, settings, control=ds.get("control"), expression_source=source
    )
    return lists, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--gseapy-lists", type=int, default=20)
    args = parser.parse_args()

    library = genesets.read_gmt(genesets.go_bp_2023_path())
    config = yaml.safe_load(Path("config/config.yaml").read_text())
    rows, sample = [], None
    for dataset in ("pbmc", "cellpainting"):
        store = TokenStore.open(args.results / dataset / "tokens")
        for model in sorted((args.results / dataset / "models").iterdir()):
            codes = sp.load_npz(model / "codes.npz").tocsr()
            start = time.perf_counter()
            lists, settings = gene_lists_of(config, dataset, codes, store.obs)
            listed = time.perf_counter()
            terms = genesets.term_matrix(
                library,
                lists.genes,
                min_size=settings["min_term_size"],
                max_size=settings["max_term_size"],
            )
            table = enrich.enrich_lists(lists.lists, terms)
            done = time.perf_counter()
            rows.append(
                {
                    "dataset": dataset,
                    "model": model.name,
                    "features": codes.shape[1],
                    "gene_lists": lists.lists.shape[0],
                    "terms": terms.n_terms,
                    "pairs_with_overlap": len(table),
                    "gene_lists_s": listed - start,
                    "enrichment_s": done - listed,
                }
            )
            if sample is None and dataset == "pbmc":
                sample = (lists, terms, done - listed)
    timings = pd.DataFrame(rows)
    print(timings.round(3).to_string(index=False))
    total = timings[["gene_lists_s", "enrichment_s"]].sum()
    print(
        f"\nall {len(timings)} models, {timings.features.sum()} features x GO BP terms: "
        f"gene lists {total.gene_lists_s:.2f} s + enrichment {total.enrichment_s:.2f} s = "
        f"{total.sum():.2f} s"
    )

    lists, terms, vectorised_s = sample
    n = min(args.gseapy_lists, lists.lists.shape[0])
    gene_sets = {
        t: list(terms.genes[terms.membership[i].indices]) for i, t in enumerate(terms.terms)
    }
    start = time.perf_counter()
    for i in range(n):
        gseapy.enrich(
            gene_list=list(terms.genes[lists.lists[i].indices]),
            gene_sets=gene_sets,
            background=list(terms.genes),
            outdir=None,
            cutoff=1.0,
            no_plot=True,
        )
    per_list = (time.perf_counter() - start) / n
    ours_per_list = vectorised_s / lists.lists.shape[0]
    print(
        f"\n{lists.lists.shape[0]} gene lists of one pbmc model x {terms.n_terms} terms: "
        f"vectorised {1000 * ours_per_list:.2f} ms/list, gseapy.enrich loop "
        f"{1000 * per_list:.1f} ms/list (over {n} lists); ratio {per_list / ours_per_list:.0f}x"
    )


if __name__ == "__main__":
    main()
