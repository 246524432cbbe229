"""Which GO terms the features most selective for each label come out with, and, on simulated
screens, whether the planted term of each gene group is recovered (strictly, or allowing ties
with terms that have the same genes in the screen), against what a random feature achieves."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.enrich.gene_lists import DOWN

log = logging.getLogger(__name__)


def most_selective_features(
    best_selectivity: Mapping[str, pd.DataFrame],
    enrichment: Mapping[str, pd.DataFrame],
    label_task: str,
    labels: Sequence[str] | None,
) -> Iterator[tuple[str, str, int, float, pd.DataFrame]]:
    """Yield (variant, label, feature, avg selectivity, its terms sorted best first) for the
    feature most selective for each label; down-regulated lists are left out."""
    for variant, best in best_selectivity.items():
        best = best[best["task"] == label_task]
        if best.empty:
            raise ValueError(
                f"{variant}: best selectivity has no rows for task {label_task!r} "
                "(enrich.label_task)"
            )
        if labels:
            missing = sorted(set(labels) - set(best["label"].astype(str)))
            if missing:
                raise ValueError(
                    f"enrich.labels: {missing} are not labels of task {label_task!r} ({variant})"
                )
            best = best[best["label"].astype(str).isin(labels)]
        table = enrichment[variant]
        for label, feature, avg in best[["label", "best_feature", "best_avg"]].itertuples(
            index=False
        ):
            hits = table[(table["feature"] == feature) & (table["direction"] != DOWN)]
            yield (
                variant,
                str(label),
                int(feature),
                float(avg),
                hits.sort_values(["p_value", "term_size", "term"]),
            )


def label_terms(
    best_selectivity: Mapping[str, pd.DataFrame],
    enrichment: Mapping[str, pd.DataFrame],
    label_task: str,
    labels: Sequence[str] | None,
    top_terms: int,
) -> pd.DataFrame:
    """Per model and label: the feature most selective for the label and its top terms."""
    rows = []
    for variant, label, feature, avg, hits in most_selective_features(
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
    return pd.DataFrame(rows)


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


def go_recovery(
    best_selectivity: Mapping[str, pd.DataFrame],
    enrichment: Mapping[str, pd.DataFrame],
    groups: pd.DataFrame,
    group_task: str,
    fdr: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulated screens: is each planted GO term the top term (FDR < ``fdr``) of the feature
    most selective for its group? Reported strictly (the only top term) and allowing ties with
    terms that have exactly the same genes in the screen; with the list's precision and recall
    for the group's genes, and the rate at which a random feature recovers the term (chance).
    Returns the per-group table and the per-model summary."""
    groups = groups.set_index("gene_group")
    rows = []
    for variant, group, feature, avg, hits in most_selective_features(
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
                "random_feature_rate": _chance_rate(enrichment[variant], term, fdr),
            }
        )
    table = pd.DataFrame(rows)
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
    return table, summary


def _chance_rate(table: pd.DataFrame, term: str, fdr: float) -> float:
    """Fraction of features whose list recovers ``term``: what picking a feature at random
    would achieve. Features whose genes touch no term have no rows and are left out, which can
    only raise this rate (a conservative baseline)."""
    lists = table[table["direction"] != DOWN]
    if lists.empty:
        return 0.0
    recovered = [
        planted_term_outcome(hits, term, fdr)["recovered"]
        for _, hits in lists.groupby("feature", sort=False)
    ]
    return float(np.mean(recovered))


def perfect_list_recovery(groups: pd.DataFrame, terms, fdr: float) -> pd.DataFrame:
    """The GO-recovery reference of a simulated screen (not a bound: other terms may tie):
    per planted group, how its planted term fares for the gene list a perfect feature would
    give, exactly the group's genes that are in the background (``terms``: the library
    restricted to the screened genes). Columns
    group, perfect_list_size, perfect_rank, perfect_fdr, perfect_recovered,
    perfect_recovered_strict."""
    from cellconcepts.enrich.genesets import normalise_symbols
    from cellconcepts.enrich.statistics import enrich_lists

    index = {gene: i for i, gene in enumerate(terms.genes)}
    rows, cols = [], []
    for i, genes in enumerate(groups["genes"].astype(str)):
        hits = sorted({index[g] for g in normalise_symbols(genes.split(";")) if g in index})
        rows.extend([i] * len(hits))
        cols.extend(hits)
    lists = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(groups), terms.genes.size))
    table = enrich_lists(lists, terms, with_genes=False)
    out = []
    for i, (group, term) in enumerate(groups[["gene_group", "go_term"]].itertuples(index=False)):
        outcome = planted_term_outcome(table[table["list"] == i], term, fdr)
        out.append(
            {
                "group": group,
                "perfect_list_size": int(lists[i].sum()),
                "perfect_rank": outcome["planted_rank"],
                "perfect_fdr": outcome["planted_fdr"],
                "perfect_recovered": outcome["recovered"],
                "perfect_recovered_strict": outcome["recovered_strict"],
            }
        )
    return pd.DataFrame(out)


def with_perfect_list(
    per_group: pd.DataFrame, per_model: pd.DataFrame, perfect: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `go_recovery` tables with the perfect-list reference (`perfect_list_recovery`):
    its columns on each group's row, and the fraction of planted terms a perfect list recovers
    (``perfect_list``, ``perfect_list_strict``) on each model's."""
    per_group = per_group.merge(perfect, on="group", how="left")
    per_model = per_model.copy()
    per_model["perfect_list"] = float(perfect["perfect_recovered"].mean())
    per_model["perfect_list_strict"] = float(perfect["perfect_recovered_strict"].mean())
    log.info(
        "a perfect gene list recovers %d of %d planted terms (%d strictly)",
        int(perfect["perfect_recovered"].sum()),
        len(perfect),
        int(perfect["perfect_recovered_strict"].sum()),
    )
    return per_group, per_model
