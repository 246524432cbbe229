"""Stages of GO enrichment (workflow/rules/enrich.smk): per model, feature -> genes -> terms,
checked against gseapy; per dataset, the terms of the features most selective for each label
(and, for simulated screens, whether the planted GO term comes out on top)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts import enrich, enrich_figures, evaluate, feature_genes, genesets, io, report
from cellconcepts.pipeline import task_labels
from cellconcepts.settings import enrichment_mode

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
EXPRESSION = "expression"
GSEAPY_CHECK_COLUMNS = [
    "list",
    "feature",
    "direction",
    "n_genes",
    "n_terms_ours",
    "n_terms_gseapy",
    "same_terms",
    "same_overlaps",
    "max_abs_log10_p_difference",
    "max_abs_adjusted_p_difference",
]


def expression_matrix(adata, matrix: str, where: str) -> tuple[Any, np.ndarray]:
    """(cells x genes matrix, gene symbols) from ``raw``, ``X`` or ``layer:<name>``."""
    if matrix == "raw":
        if adata.raw is None:
            raise ValueError(
                f"{where}: enrich.expression.matrix is 'raw' but the data has no .raw; "
                "use 'X' or 'layer:<name>' (log1p-normalised values)"
            )
        return adata.raw.X, np.asarray(adata.raw.var_names, dtype=object)
    if matrix == "X":
        return adata.X, np.asarray(adata.var_names, dtype=object)
    layer = matrix.removeprefix("layer:")
    if layer not in adata.layers:
        raise ValueError(
            f"{where}: enrich.expression.matrix {matrix!r}: no layer {layer!r}; "
            f"layers: {list(adata.layers)}"
        )
    return adata.layers[layer], np.asarray(adata.var_names, dtype=object)


def _aligned_expression(source: str, matrix: str, obs: pd.DataFrame):
    """Expression rows in token-store order (matched on ``obs_name``)."""
    from cellconcepts import embed  # scanpy is slow to import

    adata = embed.load_expression(source)
    values, genes = expression_matrix(adata, matrix, where=str(source))
    if "obs_name" not in obs.columns:
        raise ValueError("token store obs.parquet: no 'obs_name' column to match the cells on")
    rows = pd.Index(adata.obs_names.astype(str)).get_indexer(obs["obs_name"].astype(str))
    if (rows < 0).any():
        missing = obs["obs_name"][rows < 0].head(5).tolist()
        raise ValueError(
            f"{source}: {int((rows < 0).sum())} cells of the token store are not in the "
            f"expression data (e.g. {missing})"
        )
    values = values[rows]
    values = (
        sp.csr_matrix(values, dtype=np.float64)
        if sp.issparse(values)
        else np.asarray(values, dtype=np.float64)
    )
    peak = values.max()
    if peak > 30:
        log.warning(
            "%s: expression reaches %.1f; fold changes assume log1p-normalised values", source, peak
        )
    return values, genes


def screen_controls(dataset: Mapping[str, Any], gene_column: str) -> list[str]:
    """Values of the gene column that are not screened genes: the dataset's controls, when the
    control rows are defined on that column (e.g. non-targeting guides)."""
    control = dataset.get("control")
    if isinstance(control, Mapping) and control.get("column") == gene_column:
        return [str(v) for v in control.get("values", [])]
    return []


def feature_gene_lists(
    mode: str,
    codes: sp.csr_matrix,
    obs: pd.DataFrame,
    settings: Mapping[str, Any],
    dataset: Mapping[str, Any],
    expression_source: str | None,
) -> feature_genes.GeneLists:
    """Gene lists of every feature, by differential expression or by selectivity."""
    if mode == EXPRESSION:
        section = settings["expression"]
        values, genes = _aligned_expression(expression_source, section["matrix"], obs)
        return feature_genes.expression_gene_lists(
            values,
            genesets.normalise_symbols(genes),
            codes,
            percentile=section["active_percentile"],
            min_cells=section["min_cells"],
            fdr=section["de_fdr"],
            min_log2_fold_change=section["min_log2_fold_change"],
            method=section["de_method"],
        )
    section = settings["screen"]
    column = section["gene_column"]
    if column not in obs.columns:
        raise ValueError(
            f"token store obs.parquet: no column {column!r} (enrich.screen.gene_column, the "
            f"perturbed gene of each image); columns: {list(obs.columns)}"
        )
    labels = obs[column].astype("string").astype(object)
    labels = labels.where(labels.notna(), np.nan)
    symbols = labels.where(labels.isna(), genesets.normalise_symbols(labels.fillna("")))
    return feature_genes.selective_gene_lists(
        codes,
        symbols,
        controls=genesets.normalise_symbols(screen_controls(dataset, column)),
        min_selectivity=section["min_selectivity"],
        top_n=section["top_n"],
    )


def _task(dataset: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for task in dataset["tasks"]:
        if task["name"] == name:
            return task
    raise ValueError(f"enrich: task {name!r} is not one of {[t['name'] for t in dataset['tasks']]}")


def selective_labels(
    codes: sp.csr_matrix, obs: pd.DataFrame, tasks: Sequence[Mapping[str, Any]], threshold: float
) -> pd.Series:
    """Per feature: 'task=label (avg)' for every label it is selective for (avg >= threshold)."""
    parts: list[list[str]] = [[] for _ in range(codes.shape[1])]
    for task in tasks:
        sel = evaluate.selectivity(codes, task_labels(obs, task))
        label_idx, feature_idx = np.nonzero(sel.avg >= threshold)
        for i, f in sorted(zip(label_idx, feature_idx, strict=True), key=lambda p: p[1]):
            parts[f].append(f"{task['name']}={sel.labels[i]} ({sel.avg[i, f]:.2f})")
    return pd.Series(["; ".join(p) for p in parts], name="selective_labels")


def annotate_features(
    gene_lists: feature_genes.GeneLists,
    enrichment: pd.DataFrame,
    labels: pd.Series,
    fdr: float,
) -> pd.DataFrame:
    """One row per feature: status, list sizes, selective labels, best term and its genes."""
    table = gene_lists.features.copy()
    table.insert(1, "selective_labels", labels.to_numpy())
    best = enrichment.sort_values(["feature", "p_value", "term_size", "term"]).drop_duplicates(
        "feature"
    )
    best = best.set_index("feature")[["direction", "term", "fdr", "overlap", "list_size", "genes"]]
    best.columns = [
        "best_direction",
        "best_term",
        "best_fdr",
        "best_overlap",
        "list_size",
        "best_genes",
    ]
    n_significant = enrichment[enrichment["fdr"] < fdr].groupby("feature").size()
    table = table.join(best, on="feature")
    table["n_significant_terms"] = n_significant.reindex(table["feature"], fill_value=0).to_numpy()
    return table


def gseapy_check(
    gene_lists: feature_genes.GeneLists,
    terms: genesets.TermMatrix,
    enrichment: pd.DataFrame,
    n_lists: int,
) -> pd.DataFrame:
    """Recompute the most enriched ``n_lists`` gene lists with ``gseapy.enrich`` (same size-
    filtered terms and background) and compare term by term; raises on any disagreement.

    gseapy adjusts p-values over the terms a list overlaps, this workflow over every term
    tested; the check compares p-values, overlaps, and BH over gseapy's family.
    """
    import gseapy

    library = {t: list(terms.genes[terms.membership[i].indices]) for i, t in enumerate(terms.terms)}
    ranked = enrichment.sort_values("p_value").drop_duplicates("list")["list"].head(n_lists)
    records = []
    for list_id in ranked:
        ours = enrichment[enrichment["list"] == list_id].set_index("term")
        query = list(terms.genes[gene_lists.lists[list_id].indices])
        result = gseapy.enrich(
            gene_list=query,
            gene_sets=library,
            background=list(terms.genes),
            outdir=None,
            cutoff=1.0,
            no_plot=True,
        ).results.set_index("Term")
        same_terms = set(ours.index) == set(result.index)
        common = ours.index.intersection(result.index)
        overlap = result.loc[common, "Overlap"].str.split("/").str[0].astype(int)
        p_diff = np.abs(
            np.log10(ours.loc[common, "p_value"]) - np.log10(result.loc[common, "P-value"])
        )
        ours_bh = enrich.benjamini_hochberg(ours.loc[common, "p_value"].to_numpy())
        adj_diff = np.abs(ours_bh - result.loc[common, "Adjusted P-value"].to_numpy())
        records.append(
            {
                "list": int(list_id),
                "feature": int(gene_lists.index.loc[list_id, "feature"]),
                "direction": gene_lists.index.loc[list_id, "direction"],
                "n_genes": len(query),
                "n_terms_ours": len(ours),
                "n_terms_gseapy": len(result),
                "same_terms": same_terms,
                "same_overlaps": bool((overlap.to_numpy() == ours.loc[common, "overlap"]).all()),
                "max_abs_log10_p_difference": float(p_diff.max()) if len(common) else 0.0,
                "max_abs_adjusted_p_difference": float(adj_diff.max()) if len(common) else 0.0,
            }
        )
    check = pd.DataFrame(records, columns=GSEAPY_CHECK_COLUMNS)
    if len(check):
        bad = check[
            ~check["same_terms"]
            | ~check["same_overlaps"]
            | (check["max_abs_log10_p_difference"] > 1e-9)
            | (check["max_abs_adjusted_p_difference"] > 1e-9)
        ]
        if len(bad):
            raise RuntimeError(f"enrichment disagrees with gseapy.enrich:\n{bad.to_string()}")
        log.info("gseapy.enrich agrees on %d gene lists", len(check))
    return check


def enrich_model(
    *,
    store_dir: PathLike,
    codes_path: PathLike,
    dataset: Mapping[str, Any],
    settings: Mapping[str, Any],
    expression_source: str | None,
    umap_path: PathLike | None,
    variant: str,
    outputs: Mapping[str, PathLike],
) -> None:
    """Feature -> genes -> GO terms for one model; tables, the gseapy check and figures."""
    mode = enrichment_mode(dataset["kind"])
    store = io.TokenStore.open(store_dir)
    codes = sp.load_npz(codes_path).tocsr()
    if codes.shape[0] != store.n_tokens:
        raise ValueError(
            f"{codes_path}: {codes.shape[0]} rows, the token store has {store.n_tokens}"
        )
    background = "genes measured" if mode == EXPRESSION else "genes screened"
    started = time.perf_counter()
    gene_lists = feature_gene_lists(mode, codes, store.obs, settings, dataset, expression_source)
    listed = time.perf_counter()
    terms = genesets.term_matrix(
        genesets.load_gene_sets(settings["gene_sets"]),
        gene_lists.genes,
        min_size=settings["min_term_size"],
        max_size=settings["max_term_size"],
        where=f"{variant} background ({background})",
    )
    loaded = time.perf_counter()
    enrichment = enrich.enrich_lists(gene_lists.lists, terms)
    enriched = time.perf_counter()
    enrichment = enrichment.join(gene_lists.index, on="list")
    enrichment = enrichment[["feature", "direction", *enrich.ENRICHMENT_COLUMNS]]
    log.info(
        "%d features x %d terms: gene lists %.2f s, enrichment %.2f s",
        codes.shape[1],
        terms.n_terms,
        listed - started,
        enriched - loaded,
    )

    labels = selective_labels(codes, store.obs, dataset["tasks"], settings["label_min_selectivity"])
    annotation = annotate_features(gene_lists, enrichment, labels, settings["fdr"])
    check = gseapy_check(gene_lists, terms, enrichment, settings["check_lists"])
    summary = pd.DataFrame(
        [
            {
                "variant": variant,
                "mode": mode,
                "n_features": codes.shape[1],
                "n_gene_lists": gene_lists.lists.shape[0],
                "background_genes": terms.genes.size,
                "background_genes_in_no_term": terms.n_unmatched,
                "library_terms": terms.n_library_terms,
                "terms_tested": terms.n_terms,
                "features_with_significant_term": int(
                    (annotation["best_fdr"] < settings["fdr"]).sum()
                ),
                "gene_list_seconds": listed - started,
                "enrichment_seconds": enriched - loaded,
            }
        ]
    )

    io.write_frame(enrichment, outputs["enrichment"])
    io.write_frame(enrichment, outputs["enrichment_csv"])
    io.write_frame(gene_lists.genes_table, outputs["genes"])
    io.write_frame(annotation, outputs["annotation"])
    io.write_frame(check, outputs["gseapy_check"])
    io.write_frame(summary, outputs["summary"])

    top = annotation[annotation["best_fdr"] < settings["fdr"]].nsmallest(
        settings["figures"]["dotplot_features"], "best_fdr"
    )["feature"]
    enrich_figures.plot_dotplot(
        enrichment,
        list(top),
        outputs["dotplot"],
        n_terms=settings["figures"]["dotplot_terms"],
        fdr=settings["fdr"],
        title=f"{variant}: top GO terms of the most enriched features",
    )
    if umap_path is not None:
        _umap_figure(
            codes, store.obs, dataset, settings, annotation, umap_path, outputs["umap"], variant
        )


def _umap_figure(codes, obs, dataset, settings, annotation, umap_path, png_path, variant) -> None:
    """UMAP panels: the label task, then the feature most selective for each chosen label."""
    task = _task(dataset, settings["label_task"] or dataset["tasks"][0]["name"])
    labels = task_labels(obs, task)
    sel = evaluate.selectivity(codes, labels)
    wanted = settings["labels"] or list(sel.labels)
    panels = []
    for label in wanted[: settings["figures"]["umap_features"]]:
        if label not in sel.labels:
            continue
        i = list(sel.labels).index(label)
        f = int(np.argmax(sel.avg[i]))
        best = annotation.set_index("feature").loc[f]
        if pd.isna(best["best_term"]):
            term = f"no gene list ({best['status']})"
        else:
            term = f"{best['best_term']} ({best['best_direction']}, FDR {best['best_fdr']:.2g})"
        caption = f"feature {f} (most selective for {label}, avg {sel.avg[i, f]:.2f}): {term}"
        panels.append((f, caption))
    umap = pd.read_parquet(umap_path)
    if not np.array_equal(umap["token_id"].to_numpy(), obs["token_id"].to_numpy()):
        raise ValueError(f"{umap_path}: token ids differ from the token store's")
    enrich_figures.plot_umap(
        umap[["umap1", "umap2"]].to_numpy(),
        codes,
        panels,
        labels.rename(task["name"]),
        png_path,
        title=f"{variant}: UMAP of the tokens, coloured by feature activation",
    )


def token_umap(store_dir: PathLike, out_path: PathLike, *, seed: int = 0) -> None:
    """UMAP coordinates of every token (for the enrichment figures)."""
    store = io.TokenStore.open(store_dir)
    tokens = np.concatenate([batch for _, batch in io.iter_batches(store.tokens, 8192)])
    coordinates = enrich_figures.umap_coordinates(tokens, seed=seed)
    table = pd.DataFrame(
        {
            "token_id": store.obs["token_id"].to_numpy(),
            "umap1": coordinates[:, 0],
            "umap2": coordinates[:, 1],
        }
    )
    io.write_frame(table, out_path)


# --------------------------------------------------------------------------- per dataset


def _most_selective_features(
    best_selectivity: Mapping[str, PathLike],
    enrichment: Mapping[str, PathLike],
    label_task: str,
    labels: Sequence[str] | None,
):
    """Yield (variant, label, feature, avg selectivity, its terms sorted best first) for the
    feature most selective for each label; down-regulated lists are left out."""
    for variant, path in best_selectivity.items():
        best = pd.read_csv(path)
        best = best[best["task"] == label_task]
        if best.empty:
            raise ValueError(f"{path}: no rows for task {label_task!r} (enrich.label_task)")
        if labels:
            missing = sorted(set(labels) - set(best["label"].astype(str)))
            if missing:
                raise ValueError(
                    f"enrich.labels: {missing} are not labels of task {label_task!r} in {path}"
                )
            best = best[best["label"].astype(str).isin(labels)]
        table = pd.read_parquet(enrichment[variant])
        for label, feature, avg in best[["label", "best_feature", "best_avg"]].itertuples(
            index=False
        ):
            hits = table[(table["feature"] == feature) & (table["direction"] != feature_genes.DOWN)]
            yield (
                variant,
                str(label),
                int(feature),
                float(avg),
                hits.sort_values(["p_value", "term_size", "term"]),
            )


def label_terms_table(
    *,
    best_selectivity: Mapping[str, PathLike],
    enrichment: Mapping[str, PathLike],
    label_task: str,
    labels: Sequence[str] | None,
    top_terms: int,
    table_path: PathLike,
) -> None:
    """Per model and label: the feature most selective for the label and its top terms."""
    rows = []
    for variant, label, feature, avg, hits in _most_selective_features(
        best_selectivity, enrichment, label_task, labels
    ):
        top = hits.head(top_terms)
        rows.append(
            {
                "variant": variant,
                "label": label,
                "feature": feature,
                "avg_selectivity": avg,
                "top_term": top["term"].iloc[0] if len(top) else None,
                "top_fdr": top["fdr"].iloc[0] if len(top) else np.nan,
                "top_terms": " | ".join(
                    f"{t} (FDR {q:.2g}, {k}/{n} genes)"
                    for t, q, k, n in top[["term", "fdr", "overlap", "list_size"]].itertuples(
                        index=False
                    )
                ),
            }
        )
    report.write_table(
        pd.DataFrame(rows),
        table_path,
        caption=f"Top GO terms of the feature most selective for each label of {label_task}",
    )


def go_recovery_table(
    *,
    best_selectivity: Mapping[str, PathLike],
    enrichment: Mapping[str, PathLike],
    groups_path: PathLike,
    group_task: str,
    fdr: float,
    table_path: PathLike,
    summary_path: PathLike,
) -> None:
    """Simulated screens: is each planted GO term the top term (FDR < ``fdr``) of the feature
    most selective for its group? Terms with the same p-value share the best rank (GO terms
    with identical genes inside the screen cannot be told apart)."""
    planted = pd.read_csv(groups_path).set_index("gene_group")["go_term"]
    rows = []
    for variant, group, feature, avg, hits in _most_selective_features(
        best_selectivity, enrichment, group_task, list(planted.index)
    ):
        term = planted[group]
        match = hits[hits["term"] == term]
        rank = int(match["rank"].iloc[0]) if len(match) else np.nan
        planted_fdr = float(match["fdr"].iloc[0]) if len(match) else np.nan
        top = hits.iloc[0] if len(hits) else None
        rows.append(
            {
                "variant": variant,
                "group": group,
                "planted_term": term,
                "feature": feature,
                "avg_selectivity": avg,
                "genes": top["list_size"] if top is not None else 0,
                "planted_overlap": int(match["overlap"].iloc[0]) if len(match) else 0,
                "planted_rank": rank,
                "planted_fdr": planted_fdr,
                "n_tied_at_top": int((hits["rank"] == 1).sum()),
                "top_term": top["term"] if top is not None else None,
                "recovered": bool(rank == 1 and planted_fdr < fdr),
            }
        )
    table = pd.DataFrame(rows)
    report.write_table(
        table,
        table_path,
        caption=f"Planted GO terms vs the top term of the feature most "
        f"selective for each group (FDR < {fdr})",
    )
    summary = (
        table.groupby("variant", sort=False)
        .agg(groups=("group", "size"), recovered=("recovered", "sum"))
        .reset_index()
    )
    summary["fraction"] = summary["recovered"] / summary["groups"]
    report.write_table(summary, summary_path, caption="Fraction of planted GO terms recovered")
