"""Report figures: what they draw, read back from the matplotlib objects."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cellconcepts.report import figures


def test_bta_interval_is_196_binomial_standard_errors() -> None:
    got = figures.bta_interval(np.array([0.5, 0.9, 1.0]), 100)
    np.testing.assert_allclose(got, [1.96 * 0.05, 1.96 * 0.03, 0.0])


def test_sparsity_figure_draws_bta_with_intervals(tmp_path: Path, monkeypatch) -> None:
    rows = [
        {"method": m, "whitening": w, "sparsity": k, "bta_cells": b, "recon_cosine": 0.8}
        for m, w, b in (("icfl", "pca", 0.6), ("topk", "none", 0.62))
        for k in (4, 8)
    ]
    headline = pd.DataFrame([*rows, {"method": "raw", "bta_cells": 0.7}])
    drawn = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, **_: drawn.setdefault("f", fig))
    figures.plot_sparsity(headline, ["cells"], tmp_path / "s.png", title="t", n_test={"cells": 140})
    bta_axes, cosine_axes = drawn["f"].axes
    bars = [c for c in bta_axes.containers if c.has_yerr]
    assert len(bars) == 2
    segments = bars[0].lines[2][0].get_segments()
    half = (segments[0][1][1] - segments[0][0][1]) / 2
    assert half == pytest.approx(1.96 * np.sqrt(0.6 * 0.4 / 140))
    assert not [c for c in cosine_axes.containers if c.has_yerr]
    assert bta_axes.get_ylim() == (0, 1)
    plt.close(drawn["f"])


def _drawn(monkeypatch) -> dict:
    drawn: dict = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, **_: drawn.setdefault("f", fig))
    return drawn


def _probing_table() -> pd.DataFrame:
    """Table `probing` of two models with two seeds each and the raw tokens, two tasks."""
    rows = []
    for method, whitening in (("icfl", "pca"), ("topk", "none")):
        for seed in (0, 1):
            for task, bta in (("cells", 0.6), ("batch", 0.3)):
                value = bta + 0.02 * seed + (0.1 if method == "topk" else 0.0)
                for representation in ("reconstruction", "codes"):
                    rows.append(
                        {
                            "variant": f"{method}_{whitening}_k8_seed{seed}",
                            "method": method,
                            "whitening": whitening,
                            "sparsity": 8.0,
                            "seed": float(seed),
                            "task": task,
                            "representation": representation,
                            "bta": value if representation == "reconstruction" else 0.1,
                            "bta_low": value - 0.05 - 0.01 * seed,
                            "bta_high": value + 0.04 + 0.01 * seed,
                        }
                    )
    for task, bta in (("cells", 0.7), ("batch", 0.5)):
        rows.append(
            {
                "variant": "raw",
                "method": "raw",
                "task": task,
                "representation": "raw",
                "bta": bta,
                "bta_low": bta - 0.1,
                "bta_high": bta + 0.08,
            }
        )
    return pd.DataFrame(rows)


def _legend_labels(fig) -> list[str]:
    (legend,) = fig.legends
    return [text.get_text() for text in legend.get_texts()]


def _legend_outside_axes(fig) -> bool:
    """The figure's legend lies below every axes (clear of the data)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    return all(box.y1 <= ax.get_window_extent(renderer).y0 for ax in fig.axes)


def test_probing_figure_draws_the_tables_intervals_one_bar_per_model(
    tmp_path: Path, monkeypatch
) -> None:
    from matplotlib.container import BarContainer, ErrorbarContainer

    drawn = _drawn(monkeypatch)
    probes = _probing_table()
    figures.plot_probing(probes, ["cells", "batch"], tmp_path / "p.png", title="t")
    fig = drawn["f"]
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == [
        "raw tokens",
        "ICFL + PCA, k=8",
        "TopK (no whitening), k=8",
    ]
    errorbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 3 and all(c.has_yerr for c in errorbars)
    model = probes[(probes.variant.str.startswith("icfl")) & (probes.representation != "codes")]
    expected = model.groupby("task")[["bta", "bta_low", "bta_high"]].mean()
    for bar, segment, task in zip(
        bars[1], errorbars[1].lines[2][0].get_segments(), ["cells", "batch"], strict=True
    ):
        assert bar.get_height() == pytest.approx(expected.loc[task, "bta"])
        (_, low), (_, high) = segment
        assert (low, high) == pytest.approx(tuple(expected.loc[task, ["bta_low", "bta_high"]]))
    raw_segments = errorbars[0].lines[2][0].get_segments()
    assert [s[0][1] for s in raw_segments] == pytest.approx([0.6, 0.4])
    assert [s[1][1] for s in raw_segments] == pytest.approx([0.78, 0.58])
    labels = _legend_labels(fig)
    assert labels == ["raw tokens", "ICFL + PCA, k=8", "TopK (no whitening), k=8", "one seed"]
    assert _legend_outside_axes(fig)
    plt.close(fig)


def _best_table(n_labels: int = 4) -> pd.DataFrame:
    rows = []
    for method, whitening in (("icfl", "pca"), ("topk", "none")):
        for seed in range(3):
            for i in range(n_labels):
                rows.append(
                    {
                        "variant": f"{method}_{whitening}_k8_seed{seed}",
                        "task": "cell_type",
                        "label": f"L{i}",
                        "best_avg": 0.9 - 0.2 * i + 0.01 * seed,
                    }
                )
    return pd.DataFrame(rows)


def test_best_selectivity_has_one_line_per_model_and_integer_ranks(
    tmp_path: Path, monkeypatch
) -> None:
    drawn = _drawn(monkeypatch)
    figures.plot_best_selectivity(_best_table(), tmp_path / "b.png", title="t")
    fig = drawn["f"]
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 2
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(line.get_ydata(), [0.91, 0.71, 0.51, 0.31])
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert _legend_labels(fig) == ["ICFL + PCA, k=8", "TopK (no whitening), k=8"]
    assert _legend_outside_axes(fig)
    plt.close(fig)


def test_training_curves_have_one_legend_entry_per_model(tmp_path: Path, monkeypatch) -> None:
    drawn = _drawn(monkeypatch)
    metrics = pd.DataFrame(
        [
            {
                "variant": f"{m}_pca_k{k}_seed{seed}",
                "step": step,
                "loss": 1.0 / step + seed,
                "recon_cosine": 0.5,
                "frac_dead": 0.0,
            }
            for m in ("icfl", "topk")
            for k in (4, 16)
            for seed in (0, 1, 2)
            for step in (10, 20, 30)
        ]
    )
    figures.plot_training_curves(metrics, tmp_path / "c.png", title="t")
    fig = drawn["f"]
    labels = _legend_labels(fig)
    assert labels == [
        "ICFL + PCA, k=4",
        "ICFL + PCA, k=16",
        "TopK + PCA, k=4",
        "TopK + PCA, k=16",
    ]
    loss = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(loss.get_ydata(), [1.0 / 10 + 1, 1.0 / 20 + 1, 1.0 / 30 + 1])
    colours = {line.get_color() for line in fig.axes[0].get_lines()}
    assert len(colours) == 4, "sparsities of one method must be told apart"
    assert _legend_outside_axes(fig)
    plt.close(fig)


def test_report_stages_put_the_headline_first() -> None:
    from cellconcepts.report.tables import DATASET_TABLES

    assert sorted(figures.REPORT_STAGES)[0] == "1. Headline"
    assert sorted(figures.REPORT_STAGES) == list(figures.REPORT_STAGES)
    for name in (*figures.DATASET_FIGURES, *DATASET_TABLES):
        assert figures.REPORT_STAGE[name] in figures.REPORT_STAGES
    assert figures.REPORT_STAGE["probing_bta"] != figures.REPORT_STAGE["best_selectivity"]
    assert figures.REPORT_STAGE["training_curves"] != figures.REPORT_STAGE["probing_bta"]


def _axes_legend_outside(fig, ax) -> bool:
    """The axes' own legend lies outside its data area."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    area = ax.get_window_extent(renderer)
    return not legend.overlaps(area)


def test_cellprofiler_comparison_draws_each_model_once(tmp_path: Path, monkeypatch) -> None:
    from cellconcepts.cellprofiler import comparison as cmp

    monkeypatch.setattr(cmp, "save_figure", lambda fig, path, **_: drawn.setdefault("f", fig))
    drawn: dict = {}
    rng = np.random.default_rng(0)
    variants = [
        f"{m}_{w}_k8_seed{s}" for m in ("icfl", "topk") for w in ("pca", "none") for s in (0, 1, 2)
    ]
    per_label = pd.DataFrame({"label": [f"g{i}" for i in range(12)], cmp.CP: rng.uniform(size=12)})
    for name in variants:
        per_label[name] = rng.uniform(size=12)
    correlations = pd.DataFrame(
        {"variant": variants, "pearson_r": 0.5, "ci_low": 0.1, "ci_high": 0.8}
    )
    sweep = pd.DataFrame({"method": cmp.CP, "mean_active": [10, 20], "mean_best_avg": [0.3, 0.4]})
    points = pd.DataFrame({"method": variants, "mean_active": 8.0, "mean_best_avg": 0.2})
    cmp.plot_comparison(per_label, correlations, sweep, points, tmp_path / "c.png", title="t")
    fig = drawn["f"]
    assert _legend_labels(fig) == [
        cmp.CP,
        "ICFL + PCA, k=8",
        "ICFL (no whitening), k=8",
        "TopK + PCA, k=8",
        "TopK (no whitening), k=8",
    ]
    assert _legend_outside_axes(fig)
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 12]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def test_layer_probe_has_integer_layers_and_its_legend_beside_the_lines(
    tmp_path: Path, monkeypatch
) -> None:
    from cellconcepts.microscopy import figures as microscopy_figures

    drawn: dict = {}
    monkeypatch.setattr(
        microscopy_figures, "save_figure", lambda fig, path, **_: drawn.setdefault("f", fig)
    )
    probes = pd.DataFrame(
        [{"task": t, "layer": layer, "bta": 0.5} for t in ("a", "b") for layer in (1, 2, 3, 4)]
    )
    microscopy_figures.plot_layer_probing(probes, 4, "a", tmp_path / "l.png")
    fig = drawn["f"]
    (ax,) = fig.axes
    fig.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == [1, 2, 3, 4]
    assert _axes_legend_outside(fig, ax)
    plt.close(fig)


def test_dataset_figures_draw_each_figure_once_with_the_raw_probes_test_sizes(
    tmp_path: Path, monkeypatch
) -> None:
    calls = {}

    def record(name):
        def plot(*args, **kwargs):
            calls[name] = (args, kwargs)

        return plot

    for name in ("plot_training_curves", "plot_best_selectivity", "plot_probing", "plot_sparsity"):
        monkeypatch.setattr(figures, name, record(name))
    paths = {stem: tmp_path / f"{stem}.png" for stem in figures.DATASET_FIGURES}
    metrics, best, probes, headline = (pd.DataFrame({"x": [i]}) for i in range(4))
    raw = pd.DataFrame({"task": ["cells", "genes"], "n_test": [140, 60], "bta": [0.7, 0.8]})
    figures.plot_dataset_figures(
        paths,
        metrics=metrics,
        best=best,
        probes=probes,
        headline=headline,
        raw_probing=raw,
        tasks=["cells", "genes"],
        title="toy",
    )
    assert calls["plot_training_curves"] == ((metrics, paths["training_curves"]), {"title": "toy"})
    assert calls["plot_best_selectivity"] == ((best, paths["best_selectivity"]), {"title": "toy"})
    args, kwargs = calls["plot_probing"]
    assert args == (probes, ["cells", "genes"], paths["probing_bta"]) and kwargs == {"title": "toy"}
    args, kwargs = calls["plot_sparsity"]
    assert args == (headline, ["cells", "genes"], paths["sparsity"])
    assert kwargs == {"title": "toy", "n_test": {"cells": 140, "genes": 60}}


def test_best_selectivity_gets_the_labels_references() -> None:
    from cellconcepts.report.tables import best_with_references

    best = pd.DataFrame({"task": "t", "label": [1, 2, 3], "best_avg": [0.5, 0.6, 0.7]})
    references = pd.DataFrame(
        {
            "task": ["t", "t", "u"],
            "label": ["1", "3", "2"],
            "oracle_selectivity": [0.9, 0.8, 0.7],
            "linear_reference": [0.4, 0.3, 0.2],
            "probe_recall": 0.5,
        }
    )
    table = best_with_references(best, references)
    assert table.columns.tolist() == [
        "task",
        "label",
        "best_avg",
        "oracle_selectivity",
        "linear_reference",
    ]
    assert table["label"].tolist() == ["1", "2", "3"]
    np.testing.assert_array_equal(table["oracle_selectivity"], [0.9, np.nan, 0.8])
    np.testing.assert_array_equal(table["linear_reference"], [0.4, np.nan, 0.3])


def test_probing_table_adds_the_raw_tokens_as_a_variant() -> None:
    from cellconcepts.report.tables import probing_table

    models = pd.DataFrame(
        {"variant": ["icfl_pca_k8_seed0"], "method": ["icfl"], "task": ["t"], "bta": [0.6]}
    )
    raw = pd.DataFrame({"task": ["t"], "bta": [0.7]})
    table = probing_table(models, raw)
    assert table.to_dict("list") == {
        "variant": ["icfl_pca_k8_seed0", "raw"],
        "method": ["icfl", "raw"],
        "task": ["t", "t"],
        "bta": [0.6, 0.7],
    }
    assert raw.columns.tolist() == ["task", "bta"]  # the raw table is left as it was


def test_dataset_tables_are_the_declared_ones_with_captions() -> None:
    from cellconcepts.report.tables import DATASET_TABLES, dataset_tables, seed_summary

    headline = pd.DataFrame(
        {
            "method": ["icfl", "icfl", "raw"],
            "whitening": ["pca", "pca", "none"],
            "sparsity": [8, 8, None],
            "seed": [0, 1, None],
            "n_features": [16, 16, None],
            "dead_features": [2, 4, None],
            "bta_t": [0.5, 0.7, 0.9],
        }
    )
    frames = {name: pd.DataFrame({"x": [i]}) for i, name in enumerate("abcd")}
    reconstruction = {
        "icfl_pca_k8_seed0": {"recon_cosine": 0.9, "recon_cosine_original": 0.8},
        "icfl_pca_k8_seed1": {"recon_cosine": 0.7, "recon_cosine_original": 0.6},
    }
    tables = dataset_tables(
        "toy",
        headline=headline,
        references=frames["a"],
        label_scores=frames["b"],
        selectivity_counts=frames["c"],
        best_selectivity=frames["d"],
        probing=frames["a"],
        reconstruction=reconstruction,
    )
    assert sorted(tables) == sorted(DATASET_TABLES)
    assert tables["references"][0] is frames["a"] and tables["probing"][0] is frames["a"]
    assert tables["label_scores"][0] is frames["b"]
    assert tables["selectivity_counts"][0] is frames["c"]
    assert tables["best_selectivity"][0] is frames["d"]
    pd.testing.assert_frame_equal(tables["headline_seeds"][0], seed_summary(headline))
    assert tables["dead_features"][0].to_dict("list") == {
        "method": ["icfl", "icfl"],
        "whitening": ["pca", "pca"],
        "sparsity": [8.0, 8.0],
        "seed": [0.0, 1.0],
        "n_features": [16.0, 16.0],
        "dead_features": [2.0, 4.0],
    }
    assert tables["reconstruction"][0].to_dict("list") == {
        "variant": ["icfl_pca_k8_seed0", "icfl_pca_k8_seed1"],
        "recon_cosine": [0.9, 0.7],
        "recon_cosine_original": [0.8, 0.6],
    }
    assert tables["dead_features"][1] == "toy: dead features"
    assert tables["probing"][1] == "toy: linear probing BTA"
    assert all(caption.startswith("toy: ") for _, caption in tables.values())
