"""Report-ready tables: CSV with Markdown and LaTeX versions beside it; the per-dataset headline
table and the per-model tables gathered across variants."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from cellconcepts.config import Variant
from cellconcepts.files import PathLike, atomic_path

log = logging.getLogger(__name__)

VARIANT_COLUMNS = ["method", "whitening", "sparsity", "seed"]
# The per-dataset tables of rule report_dataset, by file stem under results/<dataset>/tables/.
DATASET_TABLES = (
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
        [_with_variant(pd.read_csv(path), variant) for variant, path in paths.items()],
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
) -> pd.DataFrame:
    """One row per model variant plus a 'raw' row (probing only), the issue's headline table.

    bta_<task> is the probe on reconstructions (paper Fig. 4A); bta_codes_<task> on the codes.
    n_features_sel_* count features selective for at least one label of any task.
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
            {k: int(v) for k, v in counts.loc["any"].items() if k.startswith("n_features_sel_")}
        )
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
    integer_columns += [c for c in table.columns if c.startswith("n_features_sel_")]
    table[integer_columns] = table[integer_columns].astype("Int64")
    return table.sort_values(["method", "whitening", "sparsity", "seed"], na_position="last")


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
) -> tuple[pd.DataFrame, pd.Series]:
    """Best avg selectivity of any feature per label of ``task`` (rows) and model (columns),
    with a last row giving the fraction of labels at or above ``threshold`` per model; and
    that fraction."""
    columns = {}
    for variant, best in best_selectivity.items():
        best = best[(best["task"] == task) & ~best["label"].astype(str).isin(exclude)]
        columns[variant] = best.set_index(best["label"].astype(str))["best_avg"]
    table = pd.DataFrame(columns).sort_index()
    table.index.name = "label"
    fraction = (table >= threshold).mean(axis=0).rename(f"fraction >= {threshold:g}")
    table = pd.concat([table, fraction.to_frame().T]).reset_index(names="label")
    return table, fraction
