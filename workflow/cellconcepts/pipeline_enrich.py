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
from cellconcepts.settings import EXPRESSION, enrichment_mode

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
GSEAPY_CHECK_COLUMNS = [
    "list",
    "sample",
    "feature",
    "direction",
    "n_genes",
    "n_terms_ours",
    "n_terms_gseapy",
    "same_terms",
    "same_overlaps",
    "max_relative_p_difference",
    "max_relative_adjusted_p_difference",
]


def expression_values(adata, matrix: str, where: str) -> tuple[Any, np.ndarray]:
    """(cells x genes values, gene names) from ``raw``, ``X`` or ``layer:<name>``."""
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


def aligned_expression(source: str, matrix: str, obs: pd.DataFrame):
    """Log1p expression rows in token-store order (matched on ``obs_name``) and upper-cased
    gene symbols; scaled (negative) values and repeated cell or gene names are refused."""
    from cellconcepts import embed  # scanpy is slow to import

    adata = embed.load_expression(source)
    where = f"{source} (enrich.expression.matrix: {matrix})"
    values, genes = expression_values(adata, matrix, where=where)
    if "obs_name" not in obs.columns:
        raise ValueError("token store obs.parquet: no 'obs_name' column to match the cells on")
    names = pd.Index(adata.obs_names.astype(str))
    if names.has_duplicates:
        raise ValueError(
            f"{source}: repeated cell names (obs_names), e.g. "
            f"{list(names[names.duplicated()][:5])}; expected one row per cell"
        )
    symbols = genesets.normalise_symbols(genes)
    repeated = pd.Series(symbols).duplicated()
    if repeated.any():
        raise ValueError(
            f"{where}: {int(repeated.sum())} gene names repeat once upper-cased (e.g. "
            f"{sorted(set(symbols[repeated.to_numpy()]))[:5]}); expected one column per gene"
        )
    rows = names.get_indexer(obs["obs_name"].astype(str))
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
    if values.min() < 0:
        raise ValueError(
            f"{where}: values go down to {values.min():.3g}; differential expression and fold "
            "changes need log1p-normalised expression (>= 0), not scaled data (e.g. "
            "pbmc68k_reduced's X); use the raw or a layer of normalised values"
        )
    if values.max() > 30:
        log.warning(
            "%s: values reach %.1f; fold changes assume log1p-normalised expression, not counts",
            where,
            values.max(),
        )
    return values, symbols


def screen_controls(dataset: Mapping[str, Any], obs: pd.DataFrame, gene_column: str) -> list[str]:
    """Values of the gene column that are not screened genes: the configured controls (when
    defined on that column) and any value found only on control rows (``is_control``)."""
    controls: set[str] = set()
    control = dataset.get("control")
    if isinstance(control, Mapping) and control.get("column") == gene_column:
        controls |= {str(v) for v in control.get("values", [])}
    genes = obs[gene_column].astype("string")
    only_controls = obs["is_control"].astype(bool).groupby(genes, observed=True).all()
    controls |= set(only_controls.index[only_controls.to_numpy()].astype(str))
    return sorted(controls)


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
        values, genes = aligned_expression(expression_source, section["matrix"], obs)
        return feature_genes.expression_gene_lists(
            values,
            genes,
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
        controls=genesets.normalise_symbols(screen_controls(dataset, obs, column)),
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
    # FDR first: it is only monotone in p within one list, and a feature has up to two lists
    best = enrichment.sort_values(
        ["feature", "fdr", "p_value", "term_size", "term"]
    ).drop_duplicates("feature")
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
    seed: int = 0,
) -> pd.DataFrame:
    """Recompute ``n_lists`` of the most enriched gene lists and ``n_lists`` random ones with
    ``gseapy.enrich`` (the same background, and the library restricted to it) and compare term
    by term; raises on any disagreement.

    gseapy adjusts p-values over the terms a list overlaps, this workflow over every term
    tested; the check compares p-values, overlaps, and BH over gseapy's family.
    """
    if n_lists == 0 or enrichment.empty:
        return pd.DataFrame(columns=GSEAPY_CHECK_COLUMNS)
    import gseapy

    top = enrichment.sort_values("p_value").drop_duplicates("list")["list"].head(n_lists)
    others = np.setdiff1d(enrichment["list"].unique(), top)
    rng = np.random.default_rng(seed)
    sampled = rng.choice(others, size=min(n_lists, others.size), replace=False)
    library = {t: list(terms.genes[terms.membership[i].indices]) for i, t in enumerate(terms.terms)}
    records = []
    for kind, list_id in [("top", i) for i in top] + [("random", i) for i in sorted(sampled)]:
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
        common = ours.index.intersection(result.index)
        overlap = result.loc[common, "Overlap"].str.split("/").str[0].astype(int)
        ours_p = ours.loc[common, "p_value"].to_numpy()
        ours_bh = enrich.benjamini_hochberg(ours_p)
        records.append(
            {
                "list": int(list_id),
                "sample": kind,
                "feature": int(gene_lists.index.loc[list_id, "feature"]),
                "direction": gene_lists.index.loc[list_id, "direction"],
                "n_genes": len(query),
                "n_terms_ours": len(ours),
                "n_terms_gseapy": len(result),
                "same_terms": set(ours.index) == set(result.index),
                "same_overlaps": bool((overlap.to_numpy() == ours.loc[common, "overlap"]).all()),
                "max_relative_p_difference": _max_relative_difference(
                    ours_p, result.loc[common, "P-value"].to_numpy()
                ),
                "max_relative_adjusted_p_difference": _max_relative_difference(
                    ours_bh, result.loc[common, "Adjusted P-value"].to_numpy()
                ),
            }
        )
    check = pd.DataFrame(records, columns=GSEAPY_CHECK_COLUMNS)
    bad = check[
        ~check["same_terms"].astype(bool)
        | ~check["same_overlaps"].astype(bool)
        | ~(check["max_relative_p_difference"] <= 1e-9)  # NaN fails too
        | ~(check["max_relative_adjusted_p_difference"] <= 1e-9)
    ]
    if len(bad):
        raise RuntimeError(f"enrichment disagrees with gseapy.enrich:\n{bad.to_string()}")
    log.info("gseapy.enrich agrees on %d gene lists", len(check))
    return check


def _max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| / max(|a|, |b|) (0 where both are 0, NaN if either is NaN)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    scale = np.maximum(np.abs(a), np.abs(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(scale > 0, np.abs(a - b) / scale, 0.0)
    relative[np.isnan(a) | np.isnan(b)] = np.nan
    return float(np.max(relative)) if not np.isnan(relative).any() else float("nan")


def enrich_model(
    *,
    store_dir: PathLike,
    codes_path: PathLike,
    dataset: Mapping[str, Any],
    settings: Mapping[str, Any],
    expression_source: str | None,
    gene_sets_path: PathLike | None,
    variant: str,
    outputs: Mapping[str, PathLike],
) -> None:
    """Feature -> genes -> GO terms for one model; tables, the gseapy check and the dot plot.

    ``gene_sets_path``: the GMT the rule declares (a user file, or a downloaded Enrichr
    library); None reads the offline default, GO BP 2023 from pyenrichr."""
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
    library = genesets.read_gmt(gene_sets_path or genesets.go_bp_2023_path())
    terms = genesets.term_matrix(
        library,
        gene_lists.genes,
        min_size=settings["min_term_size"],
        max_size=settings["max_term_size"],
        where=f"{variant} background ({background})",
    )
    enrichment = enrich.enrich_lists(gene_lists.lists, terms)
    enriched = time.perf_counter()
    enrichment = enrichment.join(gene_lists.index, on="list")
    enrichment = enrichment[["feature", "direction", *enrich.ENRICHMENT_COLUMNS]]
    log.info(
        "%d features x %d terms: gene lists %.2f s, enrichment %.2f s",
        codes.shape[1],
        terms.n_terms,
        listed - started,
        enriched - listed,
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
                    (annotation["n_significant_terms"] > 0).sum()
                ),
                "gene_list_seconds": listed - started,
                "enrichment_seconds": enriched - listed,
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


def enrichment_umap(
    *,
    store_dir: PathLike,
    codes_path: PathLike,
    annotation_path: PathLike,
    umap_path: PathLike,
    dataset: Mapping[str, Any],
    settings: Mapping[str, Any],
    label_task: str,
    variant: str,
    png_path: PathLike,
) -> None:
    """UMAP panels: the label task, then the feature most selective for each reported label,
    titled with its best term."""
    obs = io.TokenStore.open(store_dir).obs
    codes = sp.load_npz(codes_path).tocsr()
    annotation = pd.read_csv(annotation_path).set_index("feature")
    task = _task(dataset, label_task)
    labels = task_labels(obs, task)
    sel = evaluate.selectivity(codes, labels)
    wanted = settings["labels"] or list(sel.labels)
    missing = sorted(set(wanted) - set(sel.labels))
    if missing:
        raise ValueError(f"enrich.labels: {missing} are not labels of task {task['name']!r}")
    panels = []
    for label in wanted[: settings["figures"]["umap_features"]]:
        i = list(sel.labels).index(label)
        f = int(np.argmax(sel.avg[i]))
        best = annotation.loc[f]
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
        labels.fillna("(no label)").rename(task["name"]),
        png_path,
        title=f"{variant}: UMAP of the cells, coloured by feature activation",
    )


def token_umap(store_dir: PathLike, out_path: PathLike, *, seed: int = 0) -> None:
    """UMAP coordinates of every token (for the enrichment figures); the kNN graph needs every
    token at once, so the store is read whole."""
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


def download_gene_sets(library: str, out_path: PathLike) -> None:
    """An Enrichr library, downloaded once per run into the results as a GMT (a declared
    input of every enrichment job, so all models see the same version)."""
    gene_sets = genesets.download_enrichr_library(library)
    genesets.write_gmt(gene_sets, out_path)
    log.info(
        "Enrichr library %s: %d terms, downloaded %s",
        library,
        len(gene_sets),
        time.strftime("%Y-%m-%d %H:%M:%S"),
    )


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


def planted_term_outcome(hits: pd.DataFrame, term: str, fdr: float) -> dict[str, Any]:
    """How the planted ``term`` fares among one gene list's terms (``hits``, one feature):
    its rank and FDR, whether it is the only top term, whether every term tied with it at the
    top has the same genes inside the background (then no list could separate them), and
    ``recovered`` = top term, FDR < ``fdr``, and any tie only with identical terms."""
    match = hits[hits["term"] == term]
    top = hits[hits["rank"] == 1]
    if match.empty:
        return {
            "planted_rank": np.nan,
            "planted_fdr": np.nan,
            "planted_overlap": 0,
            "n_tied_at_top": len(top),
            "unique_top": False,
            "ties_identical": False,
            "recovered": False,
            "recovered_strict": False,
        }
    row = match.iloc[0]
    rank, significant = int(row["rank"]), bool(row["fdr"] < fdr)
    unique = rank == 1 and len(top) == 1
    identical = rank == 1 and bool((top["term_group"] == row["term_group"]).all())
    return {
        "planted_rank": rank,
        "planted_fdr": float(row["fdr"]),
        "planted_overlap": int(row["overlap"]),
        "n_tied_at_top": len(top),
        "unique_top": unique,
        "ties_identical": identical,
        "recovered": identical and significant,
        "recovered_strict": unique and significant,
    }


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
    most selective for its group? Reported strictly (the only top term) and allowing ties with
    terms that have exactly the same genes in the screen; with the list's precision and recall
    for the group's genes, and the rate at which a random feature recovers the term (chance)."""
    groups = pd.read_csv(groups_path).set_index("gene_group")
    tables = {variant: pd.read_parquet(path) for variant, path in enrichment.items()}
    rows = []
    for variant, group, feature, avg, hits in _most_selective_features(
        best_selectivity, enrichment, group_task, list(groups.index)
    ):
        term = groups.loc[group, "go_term"]
        outcome = planted_term_outcome(hits, term, fdr)
        list_size = int(hits["list_size"].iloc[0]) if len(hits) else 0
        rows.append(
            {
                "variant": variant,
                "group": group,
                "planted_term": term,
                "feature": feature,
                "avg_selectivity": avg,
                "list_size": list_size,
                **outcome,
                "precision": outcome["planted_overlap"] / list_size if list_size else np.nan,
                "recall": outcome["planted_overlap"] / int(groups.loc[group, "n_genes"]),
                "top_term": hits["term"].iloc[0] if len(hits) else None,
                "random_feature_rate": _chance_rate(tables[variant], term, fdr),
            }
        )
    table = pd.DataFrame(rows)
    report.write_table(
        table,
        table_path,
        caption=f"Planted GO terms vs the top term of the feature most selective for each group "
        f"(FDR < {fdr})",
    )
    summary = (
        table.groupby("variant", sort=False)
        .agg(
            groups=("group", "size"),
            recovered=("recovered", "sum"),
            recovered_strict=("recovered_strict", "sum"),
            mean_precision=("precision", "mean"),
            chance=("random_feature_rate", "mean"),
        )
        .reset_index()
    )
    summary.insert(3, "fraction", summary["recovered"] / summary["groups"])
    summary.insert(5, "fraction_strict", summary["recovered_strict"] / summary["groups"])
    report.write_table(summary, summary_path, caption="Fraction of planted GO terms recovered")


def _chance_rate(table: pd.DataFrame, term: str, fdr: float) -> float:
    """Fraction of features whose list recovers ``term``: what picking a feature at random
    would achieve. Features whose genes touch no term have no rows and are left out, which can
    only raise this rate (a conservative baseline)."""
    lists = table[table["direction"] != feature_genes.DOWN]
    if lists.empty:
        return 0.0
    recovered = [
        planted_term_outcome(hits, term, fdr)["recovered"]
        for _, hits in lists.groupby("feature", sort=False)
    ]
    return float(np.mean(recovered))
