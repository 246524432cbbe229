"""Stages of workflow/rules/enrich.smk, GO enrichment of feature-associated genes: per model,
feature -> genes -> terms, checked against gseapy; per dataset, the terms of the features most
selective for each label (and, for simulated screens, whether the planted GO term comes out on
top)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.enrich import genesets, statistics
from cellconcepts.enrich.annotation import (
    annotate_features,
    model_summary,
    most_enriched_features,
    selective_labels,
)
from cellconcepts.enrich.gene_lists import feature_gene_lists
from cellconcepts.enrich.gseapy_check import gseapy_check
from cellconcepts.enrich.modes import EXPRESSION
from cellconcepts.files import PathLike, read_results_csv, write_frame
from cellconcepts.report.tables import write_table
from cellconcepts.store.gene_sets import download_enrichr_library, write_gmt

log = logging.getLogger(__name__)


def _codes_for(codes: PathLike, obs: pd.DataFrame, where: PathLike) -> sp.csr_matrix:
    matrix = sp.load_npz(codes).tocsr()
    if matrix.shape[0] != len(obs):
        raise ValueError(
            f"{codes}: {matrix.shape[0]} rows, the token store ({where}) has {len(obs)}"
        )
    return matrix


def enrich_model(
    *,
    obs: PathLike,
    codes: PathLike,
    enrichment: PathLike,
    enrichment_csv: PathLike,
    genes: PathLike,
    annotation: PathLike,
    check: PathLike,
    summary: PathLike,
    dotplot: Sequence[PathLike],
    mode: str,
    tasks: Sequence[Mapping[str, Any]],
    control: str | Mapping[str, Any] | None,
    source: str | None,
    settings: Mapping[str, Any],
    variant: str,
    min_label_size: int = 1,
    gene_sets: PathLike | None = None,
    expression: PathLike | None = None,
) -> None:
    """Feature -> genes -> GO terms for one model; tables, the gseapy check and the dot plot.

    ``mode``: "expression" (scRNA: differential expression of the cells of ``source``, the
    user's .h5ad given as ``expression``, or the data shipped in scanpy) or "screen" (the
    perturbed genes a feature is selective for). ``gene_sets``: the GMT the rule declares (a
    user file, or a downloaded Enrichr library); absent, the offline default GO BP 2023 from
    pyenrichr is read."""
    table = pd.read_parquet(obs)
    matrix = _codes_for(codes, table, obs)
    background = "genes measured" if mode == EXPRESSION else "genes screened"
    started = time.perf_counter()
    lists = feature_gene_lists(
        mode, matrix, table, settings, control=control, expression_source=source
    )
    listed = time.perf_counter()
    terms = genesets.library_terms(
        gene_sets,
        lists.genes,
        min_size=settings["min_term_size"],
        max_size=settings["max_term_size"],
        where=f"{variant} background ({background})",
    )
    result = statistics.enrich_lists(lists.lists, terms)
    enriched = time.perf_counter()
    result = statistics.by_feature(result, lists.index)
    seconds = (listed - started, enriched - listed)
    log.info(
        "%d features x %d terms: gene lists %.2f s, enrichment %.2f s",
        matrix.shape[1],
        terms.n_terms,
        *seconds,
    )
    labels = selective_labels(
        matrix, table, tasks, settings["label_min_selectivity"], min_label_size
    )
    features = annotate_features(lists, result, labels, settings["fdr"])
    checked = gseapy_check(lists, terms, result, settings["check_lists"])
    row = model_summary(variant, mode, matrix.shape[1], lists, terms, features, seconds)
    write_frame(result, enrichment)
    write_frame(result, enrichment_csv)
    write_frame(lists.genes_table, genes)
    write_frame(features, annotation)
    write_frame(checked, check)
    write_frame(row, summary)
    _plot_top_features(result, features, settings, dotplot[0], variant)


def _plot_top_features(
    result: pd.DataFrame,
    features: pd.DataFrame,
    settings: Mapping[str, Any],
    png: PathLike,
    variant: str,
) -> None:
    """Dot plot of the top terms of the features with the most significant best term."""
    from cellconcepts.enrich.figures import plot_dotplot

    figures = settings["figures"]
    plot_dotplot(
        result,
        most_enriched_features(features, settings["fdr"], figures["dotplot_features"]),
        png,
        n_terms=figures["dotplot_terms"],
        fdr=settings["fdr"],
        title=f"{variant}: top GO terms of the most enriched features",
    )


def token_umap(*, tokens: PathLike, obs: PathLike, umap: PathLike, seed: int = 0) -> None:
    """UMAP coordinates of every token (for the enrichment figures); the kNN graph needs every
    token at once, so the store is read whole."""
    from pathlib import Path

    from cellconcepts.enrich.figures import umap_coordinates
    from cellconcepts.store.layout import TokenFiles
    from cellconcepts.store.tokens import TokenStore, iter_batches

    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)))
    values = np.concatenate([batch for _, batch in iter_batches(store.tokens, 8192)])
    coordinates = umap_coordinates(values, seed=seed)
    table = pd.DataFrame(
        {
            "token_id": store.obs["token_id"].to_numpy(),
            "umap1": coordinates[:, 0],
            "umap2": coordinates[:, 1],
        }
    )
    write_frame(table, umap)


def enrichment_umap(
    *,
    obs: PathLike,
    codes: PathLike,
    annotation: PathLike,
    umap: PathLike,
    figure: Sequence[PathLike],
    task: Mapping[str, Any],
    labels: Sequence[str] | None,
    n_features: int,
    variant: str,
    min_label_size: int = 1,
) -> None:
    """UMAP panels: the labels of ``task``, then the feature most selective for each of
    ``labels`` (all labels when None; at most ``n_features``), titled with its best term."""
    from cellconcepts.enrich.figures import plot_umap, umap_panels
    from cellconcepts.evaluate.labels import task_labels
    from cellconcepts.evaluate.selectivity import selectivity

    table = pd.read_parquet(obs)
    matrix = _codes_for(codes, table, obs)
    features = pd.read_csv(annotation).set_index("feature")
    values = task_labels(table, task, min_label_size)
    panels = umap_panels(selectivity(matrix, values), features, labels, n_features, task["name"])
    coordinates = pd.read_parquet(umap)
    if not np.array_equal(coordinates["token_id"].to_numpy(), table["token_id"].to_numpy()):
        raise ValueError(f"{umap}: token ids differ from the token store's ({obs})")
    plot_umap(
        coordinates[["umap1", "umap2"]].to_numpy(),
        matrix,
        panels,
        values.fillna("(no label)").rename(task["name"]),
        figure[0],
        title=f"{variant}: UMAP of the cells, coloured by feature activation",
    )


def download_gene_sets(*, gmt: PathLike, library: str) -> None:
    """An Enrichr library, downloaded once per run into the results as a GMT (a declared
    input of every enrichment job, so all models see the same version)."""
    library_sets = download_enrichr_library(library)
    write_gmt(library_sets, gmt)
    log.info(
        "Enrichr library %s: %d terms, downloaded %s",
        library,
        len(library_sets),
        time.strftime("%Y-%m-%d %H:%M:%S"),
    )


def _per_variant(
    variants: Sequence[str], best_selectivity: Sequence[PathLike], enrichment: Sequence[PathLike]
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    best = {v: read_results_csv(p) for v, p in zip(variants, best_selectivity, strict=True)}
    terms = {v: pd.read_parquet(p) for v, p in zip(variants, enrichment, strict=True)}
    return best, terms


def enrichment_labels(
    *,
    best_selectivity: Sequence[PathLike],
    enrichment: Sequence[PathLike],
    table: Sequence[PathLike],
    variants: Sequence[str],
    label_task: str,
    labels: Sequence[str] | None,
    top_terms: int,
) -> None:
    """Per model and label of ``label_task``: the feature most selective for the label and
    its top terms."""
    from cellconcepts.enrich.recovery import label_terms

    best, terms = _per_variant(variants, best_selectivity, enrichment)
    write_table(
        label_terms(best, terms, label_task, labels, top_terms),
        table[0],
        caption=f"Top GO terms of the feature most selective for each label of {label_task}",
    )


def go_recovery(
    *,
    best_selectivity: Sequence[PathLike],
    enrichment: Sequence[PathLike],
    groups: PathLike,
    table: Sequence[PathLike],
    summary: Sequence[PathLike],
    variants: Sequence[str],
    group_task: str,
    fdr: float,
    obs: PathLike | None = None,
    settings: Mapping[str, Any] | None = None,
    control: str | Mapping[str, Any] | None = None,
    gene_sets: PathLike | None = None,
) -> None:
    """Simulated screens: is each planted GO term the top term of the feature most selective
    for its group (`enrich.recovery.go_recovery`)? With the token ``obs`` and the enrichment
    ``settings``, also the perfect-list reference: whether a perfect gene list (the group's
    own genes) would recover it in this background (`enrich.recovery.perfect_list_recovery`)."""
    from cellconcepts.enrich.gene_lists import screen_background
    from cellconcepts.enrich.recovery import go_recovery as recovery
    from cellconcepts.enrich.recovery import perfect_list_recovery, with_perfect_list
    from cellconcepts.store.images import read_groups

    best, terms = _per_variant(variants, best_selectivity, enrichment)
    planted = read_groups(groups)
    per_group, per_model = recovery(best, terms, planted, group_task, fdr)
    if obs is not None and settings is not None:
        screened = screen_background(
            pd.read_parquet(obs), settings["screen"]["gene_column"], control
        )
        background = genesets.library_terms(
            gene_sets,
            screened,
            min_size=settings["min_term_size"],
            max_size=settings["max_term_size"],
            where="screened genes",
        )
        perfect = perfect_list_recovery(planted, background, fdr)
        per_group, per_model = with_perfect_list(per_group, per_model, perfect)
    write_table(
        per_group,
        table[0],
        caption=f"Planted GO terms vs the top term of the feature most selective for each group "
        f"(FDR < {fdr})",
    )
    write_table(per_model, summary[0], caption="Fraction of planted GO terms recovered")
