"""Report-ready tables: CSV with Markdown and LaTeX versions beside it; the per-dataset headline
table and the per-model tables gathered across variants."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from cellconcepts.files import PathLike, atomic_path, read_results_csv
from cellconcepts.variant import Variant

log = logging.getLogger(__name__)

VARIANT_COLUMNS = ["method", "whitening", "sparsity", "seed"]
# The per-dataset tables of rule report_dataset, by file stem under results/<dataset>/tables/.
DATASET_TABLES = (
    "headline_seeds",
    "references",
    "label_scores",
    "dead_features",
    "selectivity_counts",
    "best_selectivity",
    "probing",
    "reconstruction",
)


def write_table(table: pd.DataFrame, csv_path: PathLike, *, caption: str) -> None:
    """CSV plus Markdown and LaTeX versions beside it (same stem), each written atomically."""
    csv_path = Path(csv_path)
    rounded = table.round(3)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(csv_path.with_suffix(".md")) as tmp:
        tmp.write_text(rounded.to_markdown(index=False) + "\n")
    with atomic_path(csv_path.with_suffix(".tex")) as tmp:
        tmp.write_text(
            rounded.to_latex(index=False, caption=caption, na_rep="--", float_format="%.3f")
        )


def _with_variant(table: pd.DataFrame, variant: str) -> pd.DataFrame:
    spec = Variant.parse(variant)
    table = table.copy()
    for offset, column in enumerate(["variant", *VARIANT_COLUMNS]):
        value = variant if column == "variant" else getattr(spec, column)
        table.insert(offset, column, value)
    return table


def collect(paths: Mapping[str, PathLike]) -> pd.DataFrame:
    """Concatenate one CSV per model variant, tagging each row with its variant."""
    return pd.concat(
        [_with_variant(read_results_csv(path), variant) for variant, path in paths.items()],
        ignore_index=True,
    )


def headline_table(
    *,
    dead: Mapping[str, PathLike],
    reconstruction: Mapping[str, Mapping[str, float]],
    selectivity_counts: Mapping[str, PathLike],
    probing: Mapping[str, PathLike],
    raw_probing: PathLike,
    atom_recovery: Mapping[str, PathLike] | None = None,
    summaries: Mapping[str, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """One row per model variant plus a 'raw' row (probing only), the issue's headline table.

    bta_<task> is the probe on reconstructions (paper Fig. 4A); bta_codes_<task> on the codes.
    n_features_sel_* count features selective for at least one label of any task (the
    paper's thresholds), n_features_above_null those above the permutation null;
    ``summaries`` adds per-model columns (`evaluate.references.reference_summary`).
    """
    rows = []
    for variant in dead:
        spec = Variant.parse(variant)
        dead_table = pd.read_csv(dead[variant])
        counts = pd.read_csv(selectivity_counts[variant]).set_index("task")
        probes = pd.read_csv(probing[variant])
        row: dict[str, object] = {
            "method": spec.method,
            "whitening": spec.whitening,
            "sparsity": spec.sparsity,
            "seed": spec.seed,
            "n_features": len(dead_table),
            "dead_features": int(dead_table["dead"].sum()),
            "recon_cosine": reconstruction[variant]["recon_cosine"],
            "recon_cosine_original": reconstruction[variant]["recon_cosine_original"],
        }
        row.update(
            {
                k: int(v)
                for k, v in counts.loc["any"].items()
                if k.startswith("n_features_sel_") or k == "n_features_above_null"
            }
        )
        if summaries is not None:
            row.update(summaries[variant])
        for rep, prefix in (("reconstruction", "bta_"), ("codes", "bta_codes_")):
            chosen = probes[probes.representation == rep]
            row.update({prefix + t: b for t, b in zip(chosen.task, chosen.bta, strict=True)})
        if atom_recovery is not None:
            recovery = pd.read_csv(atom_recovery[variant])
            row["atom_recovery_model"] = float(recovery["recovered"].mean())
            row["atom_recovery_original"] = float(recovery["recovered_original"].mean())
        rows.append(row)
    raw = pd.read_csv(raw_probing)
    rows.append(
        {
            "method": "raw",
            "whitening": "none",
            **{"bta_" + t: b for t, b in zip(raw.task, raw.bta, strict=True)},
        }
    )
    table = pd.DataFrame(rows)
    integer_columns = ["sparsity", "seed", "n_features", "dead_features"]
    integer_columns += [
        c for c in table.columns if c.startswith("n_features_sel_") or c == "n_features_above_null"
    ]
    table[integer_columns] = table[integer_columns].astype("Int64")
    return table.sort_values(["method", "whitening", "sparsity", "seed"], na_position="last")


def seed_summary(headline: pd.DataFrame) -> pd.DataFrame:
    """The headline's model rows averaged over seeds: one row per method, whitening and
    sparsity with ``n_seeds``, and for every metric its mean (same name) and standard
    deviation over seeds (``<metric>_sd``, NaN for a single seed)."""
    models = headline[headline["method"] != "raw"]
    keys = ["method", "whitening", "sparsity"]
    metrics = [
        c
        for c in models.columns
        if c not in (*keys, "seed") and pd.api.types.is_numeric_dtype(models[c])
    ]
    grouped = models.groupby(keys, sort=True)
    mean = grouped[metrics].mean()
    sd = grouped[metrics].std(ddof=1).add_suffix("_sd")
    table = pd.concat([grouped.size().rename("n_seeds"), mean, sd], axis=1)
    ordered = ["n_seeds"] + [c for m in metrics for c in (m, f"{m}_sd")]
    return table[ordered].reset_index()


def reconstruction_summary(cosine_path: PathLike) -> dict[str, float]:
    """Mean held-out reconstruction cosine, in the model's space and the original space."""
    table = pd.read_parquet(cosine_path)
    test = table[table["split"] == "test"]
    if test.empty:
        raise ValueError(f"{cosine_path}: no held-out (split == 'test') tokens to measure on")
    return {
        "recon_cosine": float(test["cosine_model"].mean()),
        "recon_cosine_original": float(test["cosine_original"].mean()),
        "n_test_tokens": len(test),
    }


def label_selectivity(
    best_selectivity: Mapping[str, pd.DataFrame],
    task: str,
    exclude: Sequence[str],
    threshold: float = 0.5,
    references: pd.DataFrame | None = None,
    scores: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Best avg selectivity of any feature per label of ``task`` (rows) and model (columns,
    the paper's in-sample score), with a row giving the fraction of labels at or above
    ``threshold`` per model; and that fraction. With ``references``
    (`evaluate.references.task_references`), the labels' oracle selectivity and linear
    reference as the first columns; with ``scores`` (each model's `label_scores`), a last
    row, ``fraction above null (held out)``: the fraction of the labels (of those that could
    be scored held out) whose held-out best feature is above the permutation null."""
    columns = {}
    for variant, best in best_selectivity.items():
        best = best[(best["task"] == task) & ~best["label"].astype(str).isin(exclude)]
        columns[variant] = best.set_index(best["label"].astype(str))["best_avg"]
    table = pd.DataFrame(columns).sort_index()
    table.index.name = "label"
    fraction = (table >= threshold).mean(axis=0).rename(f"fraction >= {threshold:g}")
    summary = [fraction.to_frame().T]
    if scores is not None:
        above = {}
        for variant, frame in scores.items():
            rows = frame[(frame["task"] == task) & (frame["score"] == "heldout_avg")]
            rows = rows.set_index(rows["label"].astype(str)).reindex(table.index)
            scored = rows[rows["p_value"].notna()]
            above[variant] = float(scored["above_null"].astype(float).mean())
        summary.append(pd.Series(above, name="fraction above null (held out)").to_frame().T)
    if references is not None:
        limits = references[references["task"] == task]
        limits = limits.set_index(limits["label"].astype(str)).reindex(table.index)
        table.insert(0, "linear_reference", limits["linear_reference"])
        table.insert(0, "oracle_selectivity", limits["oracle_selectivity"])
    table = pd.concat([table, *summary]).reset_index(names="label")
    return table, fraction


def best_with_references(best: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """The models' best selectivity per label (`collect`ed) beside each label's oracle
    selectivity and linear reference (`evaluate.references.task_references`)."""
    return best.astype({"label": str}).merge(
        references[["task", "label", "oracle_selectivity", "linear_reference"]],
        on=["task", "label"],
        how="left",
    )


def probing_table(probing: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """The models' probing tables (`collect`ed) and the raw tokens' as variant 'raw'."""
    return pd.concat([probing, raw.assign(variant="raw", method="raw")], ignore_index=True)


def dataset_tables(
    dataset: str,
    *,
    headline: pd.DataFrame,
    references: pd.DataFrame,
    label_scores: pd.DataFrame,
    selectivity_counts: pd.DataFrame,
    best_selectivity: pd.DataFrame,
    probing: pd.DataFrame,
    reconstruction: Mapping[str, Mapping[str, float]],
) -> dict[str, tuple[pd.DataFrame, str]]:
    """`DATASET_TABLES` with their captions, by file stem, from the `headline_table`, the
    references, and the models' tables (`collect`ed; best selectivity with its references:
    `best_with_references`; probing with the raw tokens': `probing_table`; reconstruction:
    per model, its `reconstruction_summary`)."""
    dead = headline.loc[headline.method != "raw", [*VARIANT_COLUMNS, "n_features", "dead_features"]]
    recon = pd.DataFrame([{"variant": v, **r} for v, r in reconstruction.items()])
    return {
        "references": (
            references,
            f"{dataset}: per label, the linear reference, the probe's recall and the "
            "oracle selectivity",
        ),
        "label_scores": (
            label_scores,
            f"{dataset}: per model and label, the best feature in-sample and held out, "
            "against its permutation null",
        ),
        "headline_seeds": (
            seed_summary(headline),
            f"{dataset}: the headline's models, mean and sd over seeds",
        ),
        "dead_features": (dead, f"{dataset}: dead features"),
        "selectivity_counts": (selectivity_counts, f"{dataset}: selective features"),
        "best_selectivity": (
            best_selectivity,
            f"{dataset}: best selectivity per label (the paper's in-sample score) beside "
            "the oracle selectivity and the linear reference",
        ),
        "probing": (probing, f"{dataset}: linear probing BTA"),
        "reconstruction": (recon, f"{dataset}: held-out reconstruction"),
    }
