"""Stages of workflow/rules/report.smk: each dataset's headline table, per-metric tables (CSV +
Markdown + LaTeX) and figures (PNG + PDF), gathered from the per-model outputs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cellconcepts.defaults import schema_default
from cellconcepts.files import PathLike, read_results_csv
from cellconcepts.report.tables import (
    best_with_references,
    collect,
    dataset_tables,
    headline_table,
    probing_table,
    reconstruction_summary,
    write_table,
)

if TYPE_CHECKING:
    from cellconcepts.report.browser import ExampleRenderer, ModelView

log = logging.getLogger(__name__)


def _by_stem(paths: Sequence[PathLike], suffix: str) -> dict[str, Path]:
    """Declared output files of one suffix, by file stem."""
    return {Path(p).stem: Path(p) for p in paths if Path(p).suffix == suffix}


def report_dataset(
    *,
    raw_probing: PathLike,
    metrics: Sequence[PathLike],
    dead: Sequence[PathLike],
    cosine: Sequence[PathLike],
    selectivity_counts: Sequence[PathLike],
    best_selectivity: Sequence[PathLike],
    probing: Sequence[PathLike],
    headline: Sequence[PathLike],
    tables: Sequence[PathLike],
    figures: Sequence[PathLike],
    dataset: str,
    variants: Sequence[str],
    tasks: Sequence[str],
    label_scores: Sequence[PathLike],
    references: PathLike,
    atom_recovery: Sequence[PathLike] | None = None,
) -> None:
    """Every table and figure of one dataset from the per-model outputs: the headline table
    (one row per model and a 'raw' row, with per task the fraction of labels whose held-out
    best feature is above null and of those the fraction reaching the linear reference),
    `report.tables.DATASET_TABLES` and `report.figures.DATASET_FIGURES`."""
    from cellconcepts.evaluate.references import reference_summary
    from cellconcepts.report.figures import plot_dataset_figures

    def by_variant(paths: Sequence[PathLike]) -> dict[str, PathLike]:
        return dict(zip(variants, paths, strict=True))

    reconstruction = {v: reconstruction_summary(p) for v, p in by_variant(cosine).items()}
    limits = read_results_csv(references)
    scores = {v: read_results_csv(p) for v, p in by_variant(label_scores).items()}
    best = best_with_references(collect(by_variant(best_selectivity)), limits)
    top = headline_table(
        dead=by_variant(dead),
        reconstruction=reconstruction,
        selectivity_counts=by_variant(selectivity_counts),
        probing=by_variant(probing),
        raw_probing=raw_probing,
        atom_recovery=by_variant(atom_recovery) if atom_recovery else None,
        summaries={v: reference_summary(scores[v], limits, tasks) for v in variants},
    )
    raw = pd.read_csv(raw_probing)
    probes = probing_table(collect(by_variant(probing)), raw)
    write_table(top, headline[0], caption=f"{dataset}: model variants at a glance")
    table_paths = _by_stem(tables, ".csv")
    for stem, (frame, caption) in dataset_tables(
        dataset,
        headline=top,
        references=limits,
        label_scores=collect(by_variant(label_scores)),
        selectivity_counts=collect(by_variant(selectivity_counts)),
        best_selectivity=best,
        probing=probes,
        reconstruction=reconstruction,
    ).items():
        write_table(frame, table_paths[stem], caption=caption)
    plot_dataset_figures(
        _by_stem(figures, ".png"),
        metrics=collect(by_variant(metrics)),
        best=best,
        probes=probes,
        headline=top,
        raw_probing=raw,
        tasks=tasks,
        title=dataset,
    )


def atom_recovery_table(
    *,
    recovery: Sequence[PathLike],
    table: Sequence[PathLike],
    dataset: str,
    variants: Sequence[str],
) -> None:
    """Every model's atom recovery in one table (synthetic data)."""
    write_table(
        collect(dict(zip(variants, recovery, strict=True))),
        table[0],
        caption=f"{dataset}: atom recovery",
    )


def label_selectivity(
    *,
    best_selectivity: Sequence[PathLike],
    label_scores: Sequence[PathLike],
    table: Sequence[PathLike],
    variants: Sequence[str],
    task: str,
    exclude: Sequence[str],
    references: PathLike | None = None,
) -> None:
    """Best avg selectivity per label of ``task`` and model beside the label's oracle
    selectivity and linear reference, with the fraction of labels at or above 0.5 and the
    fraction above the permutation null held out, per model."""
    from cellconcepts.report.tables import label_selectivity as per_label

    best = {v: read_results_csv(p) for v, p in zip(variants, best_selectivity, strict=True)}
    scores = {v: read_results_csv(p) for v, p in zip(variants, label_scores, strict=True)}
    limits = None if references is None else read_results_csv(references)
    result, fraction = per_label(best, task, exclude, references=limits, scores=scores)
    write_table(result, table[0], caption=f"best avg selectivity per {task} label")
    for variant, value in fraction.items():
        log.info("%s: %.0f%% of %s labels at >= %g", variant, 100 * value, task, 0.5)


def feature_browser(
    *,
    obs: PathLike,
    codes: Sequence[PathLike],
    models: Sequence[PathLike],
    dead: Sequence[PathLike],
    browser: PathLike,
    dataset: str,
    kind: str,
    variants: Sequence[str],
    enriched: Sequence[str],
    tasks: Sequence[dict],
    settings: dict,
    min_label_size: int = 1,
    annotation: Sequence[PathLike] = (),
    genes: Sequence[PathLike] = (),
    terms: Sequence[PathLike] = (),
    images: PathLike | None = None,
    image_obs: PathLike | None = None,
    masks: PathLike | None = None,
    rgb: Sequence[int] | None = None,
    umap: PathLike | None = None,
    expression: PathLike | None = None,
    expression_source: str | None = None,
    expression_matrix: str = "X",
    fdr: float = schema_default("enrich.fdr"),
) -> None:
    """The dataset's static feature browser (`report.browser`): every feature of every model,
    written into a fresh folder that replaces ``browser`` only when complete. ``fdr``: the
    enrichment's significance threshold (a GO term at or above it is not a page's term);
    ``rgb``: fixed crop channels (None: per feature, those that differ most from controls)."""
    import time

    from cellconcepts.evaluate.labels import task_labels
    from cellconcepts.report import browser as pages

    started = time.perf_counter()
    table = pd.read_parquet(obs)
    labels = {t["name"]: task_labels(table, t, min_label_size) for t in tasks}
    columns = [t["column"] for t in tasks]
    folder = Path(browser)
    with pages.replacing_folder(folder) as building:
        if kind == "microscopy":
            render, listed = _crops(building, table, columns, images, image_obs, masks, rgb), None
        elif kind == "scrna":
            listed = None
            if expression_source is not None and enriched:
                source = expression or expression_source
                listed = _expression(source, expression_matrix, table)
            render = pages.umap_gallery(
                building,
                pd.read_parquet(umap),
                table,
                columns,
                listed,
                colour_by=columns[0] if columns else None,
            )
        else:
            render, listed = pages.token_table(table, columns), None
        files = dict(zip(enriched, zip(annotation, genes, terms, strict=True), strict=True))
        views = [
            _model_view(name, *inputs, files.get(name), labels, listed, fdr)
            for name, *inputs in zip(variants, codes, models, dead, strict=True)
        ]
        index = pages.write_browser(building, dataset, views, render, **settings)
    n_files, size = pages.folder_files(folder)
    log.info(
        "feature browser: %d features of %d models, %d files, %.1f MB, %.1f s",
        len(index),
        len(views),
        n_files,
        size / 1e6,
        time.perf_counter() - started,
    )


def _expression(source: PathLike, matrix: str, table: pd.DataFrame) -> tuple:
    """The cells' expression (matrix, gene symbols) in token-store order, for the gene
    tables' fold changes and the cells' tables."""
    from cellconcepts.sources.expression import aligned_expression

    return aligned_expression(source, matrix, table)


def _crops(
    building: Path,
    table: pd.DataFrame,
    columns: Sequence[str],
    images: PathLike,
    image_obs: PathLike,
    masks: PathLike | None,
    rgb: Sequence[int] | None,
) -> ExampleRenderer:
    """The browser's crop gallery over the dataset's image store, written under
    ``building``."""
    from cellconcepts.report import browser as pages
    from cellconcepts.store.images import open_image_store
    from cellconcepts.store.layout import ImageFiles

    store = open_image_store(ImageFiles(Path(images), Path(image_obs), masks))
    controls = pages.control_images(table)
    return pages.crop_gallery(
        building, store.images, table, rgb, store.masks, columns, controls=controls
    )


def _model_view(
    name: str,
    code_file: PathLike,
    model_file: PathLike,
    dead_file: PathLike,
    enrichment: tuple[PathLike, PathLike, PathLike] | None,
    labels: dict[str, pd.Series],
    listed: tuple | None,
    fdr: float,
) -> ModelView:
    """One model's browser view from its files: codes, decoder, dead flags and, where it was
    enriched, its annotation, genes and terms (``enrichment``)."""
    import scipy.sparse as sp

    from cellconcepts.dictionary.models import decoder_directions, load_model
    from cellconcepts.report.browser import model_view

    matrix = sp.load_npz(code_file).tocsr()
    dictionary, _ = load_model(model_file)
    return model_view(
        name,
        matrix,
        decoder_directions(dictionary),
        pd.read_csv(dead_file)["dead"].to_numpy(dtype=bool),
        labels,
        annotation=pd.read_csv(enrichment[0]) if enrichment else None,
        genes=pd.read_parquet(enrichment[1]) if enrichment else None,
        terms=pd.read_parquet(enrichment[2]) if enrichment else None,
        expression=listed,
        fdr=fdr,
    )


def paper_map(
    *,
    tables: Sequence[PathLike],
    csv: PathLike,
    md: PathLike,
    datasets: Sequence[str],
) -> None:
    """The papers' figures and tables beside this run's numbers (`report.paper_map`), read from
    ``tables``, the map's tables this config builds, under the results folder that holds
    ``csv``."""
    from cellconcepts.report.paper_map import build_map, write_map

    results = Path(csv).parent
    built = [Path(path).relative_to(results).as_posix() for path in tables]
    table = build_map(results, datasets, built)
    write_map(table, csv, md, results)
    log.info("%d map rows, %d not in this run", len(table), int((table["n"] == 0).sum()))
