"""Stages of workflow/rules/report.smk: each dataset's headline table, per-metric tables (CSV +
Markdown + LaTeX) and figures (PNG + PDF), gathered from the per-model outputs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cellconcepts.defaults import schema_default
from cellconcepts.files import PathLike, read_results_csv
from cellconcepts.report.tables import (
    VARIANT_COLUMNS,
    collect,
    headline_table,
    reconstruction_summary,
    seed_summary,
    write_table,
)

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
    from cellconcepts.report import figures as plots

    def by_variant(paths: Sequence[PathLike]) -> dict[str, PathLike]:
        return dict(zip(variants, paths, strict=True))

    table_paths, figure_paths = _by_stem(tables, ".csv"), _by_stem(figures, ".png")
    reconstruction = {v: reconstruction_summary(p) for v, p in by_variant(cosine).items()}
    limits = read_results_csv(references)
    scores = {v: read_results_csv(p) for v, p in by_variant(label_scores).items()}
    best = collect(by_variant(best_selectivity)).astype({"label": str})
    best = best.merge(
        limits[["task", "label", "oracle_selectivity", "linear_reference"]],
        on=["task", "label"],
        how="left",
    )
    top = headline_table(
        dead=by_variant(dead),
        reconstruction=reconstruction,
        selectivity_counts=by_variant(selectivity_counts),
        probing=by_variant(probing),
        raw_probing=raw_probing,
        atom_recovery=by_variant(atom_recovery) if atom_recovery else None,
        summaries={v: reference_summary(scores[v], limits, tasks) for v in variants},
    )
    write_table(top, headline[0], caption=f"{dataset}: model variants at a glance")
    write_table(
        limits,
        table_paths["references"],
        caption=f"{dataset}: per label, the linear reference, the probe's recall and the "
        "oracle selectivity",
    )
    write_table(
        collect(by_variant(label_scores)),
        table_paths["label_scores"],
        caption=f"{dataset}: per model and label, the best feature in-sample and held out, "
        "against its permutation null",
    )
    write_table(
        seed_summary(top),
        table_paths["headline_seeds"],
        caption=f"{dataset}: the headline's models, mean and sd over seeds",
    )

    dead_table = top.loc[top.method != "raw", [*VARIANT_COLUMNS, "n_features", "dead_features"]]
    write_table(dead_table, table_paths["dead_features"], caption=f"{dataset}: dead features")
    counts = collect(by_variant(selectivity_counts))
    write_table(counts, table_paths["selectivity_counts"], caption=f"{dataset}: selective features")
    write_table(
        best,
        table_paths["best_selectivity"],
        caption=f"{dataset}: best selectivity per label (the paper's in-sample score) beside "
        "the oracle selectivity and the linear reference",
    )
    probes = pd.concat(
        [
            collect(by_variant(probing)),
            pd.read_csv(raw_probing).assign(variant="raw", method="raw"),
        ],
        ignore_index=True,
    )
    write_table(probes, table_paths["probing"], caption=f"{dataset}: linear probing BTA")
    recon = pd.DataFrame([{"variant": v, **r} for v, r in reconstruction.items()])
    write_table(recon, table_paths["reconstruction"], caption=f"{dataset}: held-out reconstruction")

    plots.plot_training_curves(
        collect(by_variant(metrics)), figure_paths["training_curves"], title=dataset
    )
    plots.plot_best_selectivity(best, figure_paths["best_selectivity"], title=dataset)
    plots.plot_probing(probes, tasks, figure_paths["probing_bta"], title=dataset)
    raw = pd.read_csv(raw_probing)
    n_test = dict(zip(raw.task, raw.n_test, strict=True))
    plots.plot_sparsity(top, tasks, figure_paths["sparsity"], title=dataset, n_test=n_test)


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
    import shutil
    import time

    import scipy.sparse as sp

    from cellconcepts.dictionary.models import decoder_directions, load_model
    from cellconcepts.evaluate.labels import task_labels
    from cellconcepts.evaluate.selectivity import selectivity
    from cellconcepts.report import browser as pages

    started = time.perf_counter()
    table = pd.read_parquet(obs)
    labels = {t["name"]: task_labels(table, t, min_label_size) for t in tasks}
    folder = Path(browser)
    building = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    columns = [t["column"] for t in tasks]
    listed = None
    if kind == "microscopy":
        from cellconcepts.store.images import open_image_store
        from cellconcepts.store.layout import ImageFiles

        store = open_image_store(ImageFiles(Path(images), Path(image_obs), masks))
        controls = table["is_control"].to_numpy(bool) if "is_control" in table else None
        render = pages.crop_gallery(
            building, store.images, table, rgb, store.masks, columns, controls=controls
        )
    elif kind == "scrna":
        if expression_source is not None and enriched:
            from cellconcepts.enrich.gene_lists import aligned_expression

            listed = aligned_expression(expression or expression_source, expression_matrix, table)
        render = pages.umap_gallery(
            building,
            pd.read_parquet(umap),
            table,
            columns,
            listed,
            colour_by=columns[0] if columns else None,
        )
    else:
        render = pages.token_table(table, columns)
    enrichment = dict(zip(enriched, zip(annotation, genes, terms, strict=True), strict=True))
    views = []
    for name, code_file, model_file, dead_file in zip(variants, codes, models, dead, strict=True):
        matrix = sp.load_npz(code_file).tocsr()
        dictionary, _ = load_model(model_file)
        found = enrichment.get(name)
        annotated = pd.read_csv(found[0]) if found else None
        listed_genes = pd.read_parquet(found[1]) if found else None
        if found and kind == "scrna" and listed is not None:
            listed_genes = pages.fold_changes(listed_genes, annotated, matrix, *listed)
        views.append(
            pages.ModelView(
                name=name,
                codes=matrix,
                selectivity={task: selectivity(matrix, values) for task, values in labels.items()},
                dead=pd.read_csv(dead_file)["dead"].to_numpy(dtype=bool),
                directions=decoder_directions(dictionary),
                annotation=annotated,
                genes=listed_genes,
                terms=pd.read_parquet(found[2]) if found else None,
                fdr=fdr,
            )
        )
    index = pages.write_browser(building, dataset, views, render, **settings)
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    log.info(
        "feature browser: %d features of %d models, %d files, %.1f MB, %.1f s",
        len(index),
        len(views),
        sum(1 for p in folder.rglob("*") if p.is_file()),
        size / 1e6,
        time.perf_counter() - started,
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
