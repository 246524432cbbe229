"""Report-ready tables (CSV + Markdown + LaTeX) and figures (PNG + PDF) per dataset."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cellconcepts.settings import Variant  # noqa: E402

log = logging.getLogger(__name__)

PathLike = str | Path
VARIANT_COLUMNS = ["method", "whitening", "sparsity", "seed"]
METHOD_LABELS = {"icfl": "ICFL", "topk": "TopK", "raw": "raw tokens"}


def variant_label(method: str, whitening: str) -> str:
    """'ICFL + PCA' / 'TopK (no whitening)', the paper's legend names."""
    suffix = " + PCA" if whitening == "pca" else " (no whitening)"
    return METHOD_LABELS[method] + suffix


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
        row.update({k: int(v) for k, v in counts.loc["any"].items()})
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


def write_table(table: pd.DataFrame, csv_path: PathLike, *, caption: str) -> None:
    """CSV plus Markdown and LaTeX versions beside it (same stem)."""
    csv_path = Path(csv_path)
    table.to_csv(csv_path, index=False)
    rounded = table.round(3)
    csv_path.with_suffix(".md").write_text(rounded.to_markdown(index=False) + "\n")
    csv_path.with_suffix(".tex").write_text(
        rounded.to_latex(index=False, caption=caption, na_rep="--", float_format="%.3f")
    )


def save_figure(fig: plt.Figure, png_path: PathLike, *, tight_bbox: bool = False) -> None:
    """PNG (150 dpi) and a PDF beside it; ``tight_bbox`` keeps legends placed outside the axes."""
    png_path = Path(png_path)
    fig.tight_layout()
    extra = {"bbox_inches": "tight"} if tight_bbox else {}
    fig.savefig(png_path, dpi=150, **extra)
    fig.savefig(png_path.with_suffix(".pdf"), **extra)
    plt.close(fig)


def _style(method: str, whitening: str) -> dict[str, object]:
    colour = {"icfl": "tab:blue", "topk": "tab:orange", "raw": "black"}[method]
    return {"color": colour, "linestyle": "-" if whitening == "pca" else "--"}


def plot_training_curves(metrics: pd.DataFrame, png_path: PathLike, *, title: str) -> None:
    """Loss, reconstruction cosine and dead fraction against training step, per variant."""
    panels = [
        ("loss", "loss"),
        ("recon_cosine", "batch reconstruction cosine"),
        ("frac_dead", "fraction dead"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for variant, table in metrics.groupby("variant", sort=True):
        spec = Variant.parse(variant)
        label = f"{variant_label(spec.method, spec.whitening)}, k={spec.sparsity}"
        for ax, (column, _) in zip(axes, panels, strict=True):
            ax.plot(
                table["step"], table[column], label=label, **_style(spec.method, spec.whitening)
            )
    for ax, (column, name) in zip(axes, panels, strict=True):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if column == "loss":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, png_path)


def plot_best_selectivity(best: pd.DataFrame, png_path: PathLike, *, title: str) -> None:
    """Paper Fig. 8: the best avg selectivity per label, sorted, one line per variant."""
    tasks = list(dict.fromkeys(best["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for variant, table in best[best.task == task].groupby("variant", sort=True):
            spec = Variant.parse(variant)
            scores = np.sort(table["best_avg"].to_numpy())[::-1]
            ax.plot(
                np.arange(1, len(scores) + 1),
                scores,
                marker="." if len(scores) < 30 else None,
                label=f"{variant_label(spec.method, spec.whitening)}, k={spec.sparsity}",
                **_style(spec.method, spec.whitening),
            )
        ax.set_title(task)
        ax.set_xlabel("label rank")
        ax.set_ylabel("best avg selectivity")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, png_path)


def plot_probing(
    headline: pd.DataFrame, tasks: Sequence[str], png_path: PathLike, *, title: str
) -> None:
    """Paper Fig. 4A: BTA of probes on reconstructions per task, raw tokens as reference."""
    models = headline[headline.method != "raw"]
    raw = headline[headline.method == "raw"].iloc[0]
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(tasks), 3.6))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(tasks))
    for i, (_, row) in enumerate(models.iterrows()):
        style = _style(row.method, row.whitening)
        ax.bar(
            x + (i - (len(models) - 1) / 2) * width,
            [row[f"bta_{t}"] for t in tasks],
            width,
            color=style["color"],
            alpha=1.0 if row.whitening == "pca" else 0.5,
            label=f"{variant_label(row.method, row.whitening)}, k={row.sparsity}",
        )
    for xi, task in zip(x, tasks, strict=True):
        ax.hlines(raw[f"bta_{task}"], xi - 0.45, xi + 0.45, colors="black", label=None)
    ax.plot([], [], color="black", label="raw tokens")
    ax.set_xticks(x, tasks)
    ax.set_ylabel("balanced test accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title)
    save_figure(fig, png_path)


def plot_sparsity(
    headline: pd.DataFrame, tasks: Sequence[str], png_path: PathLike, *, title: str
) -> None:
    """Paper Fig. 4B/C: probe BTA and held-out reconstruction cosine against sparsity."""
    models = headline[headline.method != "raw"]
    raw = headline[headline.method == "raw"].iloc[0]
    columns = [*[f"bta_{t}" for t in tasks], "recon_cosine"]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        for (method, whitening), table in models.groupby(["method", "whitening"]):
            table = table.groupby("sparsity", as_index=False)[column].mean()
            ax.plot(
                table["sparsity"],
                table[column],
                marker="o",
                label=variant_label(method, whitening),
                **_style(method, whitening),
            )
        if column != "recon_cosine":
            ax.axhline(raw[column], color="black", linestyle=":", label="raw tokens")
        ax.set_xlabel("sparsity (non-zeros per token)")
        ax.set_ylabel(
            column.replace("bta_", "BTA ").replace("recon_cosine", "held-out recon. cosine")
        )
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, png_path)


def build_dataset_report(
    dataset: str,
    variants: Sequence[str],
    tasks: Sequence[str],
    *,
    raw_probing: PathLike,
    metrics: Sequence[PathLike],
    dead: Sequence[PathLike],
    cosine: Sequence[PathLike],
    selectivity_counts: Sequence[PathLike],
    best_selectivity: Sequence[PathLike],
    probing: Sequence[PathLike],
    atom_recovery: Sequence[PathLike] | None,
    headline_path: PathLike,
    tables_dir: PathLike,
    figures_dir: PathLike,
) -> pd.DataFrame:
    """Every table and figure of one dataset from the per-model outputs."""

    def by_variant(paths: Sequence[PathLike]) -> dict[str, PathLike]:
        return dict(zip(variants, paths, strict=True))

    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    reconstruction = {v: reconstruction_summary(p) for v, p in by_variant(cosine).items()}
    headline = headline_table(
        dead=by_variant(dead),
        reconstruction=reconstruction,
        selectivity_counts=by_variant(selectivity_counts),
        probing=by_variant(probing),
        raw_probing=raw_probing,
        atom_recovery=by_variant(atom_recovery) if atom_recovery else None,
    )
    write_table(headline, headline_path, caption=f"{dataset}: model variants at a glance")

    dead_table = headline.loc[
        headline.method != "raw", [*VARIANT_COLUMNS, "n_features", "dead_features"]
    ]
    write_table(dead_table, tables_dir / "dead_features.csv", caption=f"{dataset}: dead features")
    counts = collect(by_variant(selectivity_counts))
    write_table(
        counts, tables_dir / "selectivity_counts.csv", caption=f"{dataset}: selective features"
    )
    best = collect(by_variant(best_selectivity))
    write_table(
        best, tables_dir / "best_selectivity.csv", caption=f"{dataset}: best selectivity per label"
    )
    probes = pd.concat(
        [
            collect(by_variant(probing)),
            pd.read_csv(raw_probing).assign(variant="raw", method="raw"),
        ],
        ignore_index=True,
    )
    write_table(probes, tables_dir / "probing.csv", caption=f"{dataset}: linear probing BTA")
    recon = pd.DataFrame([{"variant": v, **r} for v, r in reconstruction.items()])
    write_table(
        recon, tables_dir / "reconstruction.csv", caption=f"{dataset}: held-out reconstruction"
    )

    plot_training_curves(
        collect(by_variant(metrics)), figures_dir / "training_curves.png", title=dataset
    )
    plot_best_selectivity(best, figures_dir / "best_selectivity.png", title=dataset)
    plot_probing(headline, tasks, figures_dir / "probing_bta.png", title=dataset)
    plot_sparsity(headline, tasks, figures_dir / "sparsity.png", title=dataset)
    return headline
