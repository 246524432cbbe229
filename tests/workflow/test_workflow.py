"""End to end: Snakemake on a tiny config; checks what the tables say, not only that they exist."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from browser_pages import CHROMIUM
from testkit import REPO, TINY, run_snakemake

from cellconcepts.report.tables import DATASET_TABLES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("tiny")
    result = run_snakemake(workdir, TINY, "--cores", "2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return workdir / "results"


def test_headline_has_a_row_per_variant_and_raw(tiny_run: Path):
    headline = pd.read_csv(tiny_run / "toy" / "headline.csv")
    models = headline[headline.method != "raw"]
    assert sorted(zip(models.method, models.whitening, strict=True)) == [
        ("icfl", "none"),
        ("icfl", "pca"),
        ("topk", "none"),
        ("topk", "pca"),
    ]
    assert (headline.method == "raw").sum() == 1
    for column in [
        "dead_features",
        "recon_cosine",
        "n_features_sel_0.5",
        "n_features_sel_0.2",
        "bta_perturbation",
        "bta_batch",
        "atom_recovery_model",
        "atom_recovery_original",
    ]:
        assert column in headline.columns, column
    assert models["sparsity"].eq(4).all()
    assert models["recon_cosine"].between(0.3, 1.0).all()
    scores = pd.read_csv(tiny_run / "toy" / "tables" / "label_scores.csv")
    heldout = scores[scores.score == "heldout_avg"]
    for task in ("perturbation", "batch"):
        # the fraction of the task's labels above null, recounted from the label scores
        rows = heldout[heldout.task == task]
        expected = rows.groupby("variant").above_null.mean()
        got = pd.Series(
            models[f"labels_above_null_{task}"].to_numpy(),
            index=[
                f"{m}_{w}_k{int(k)}_seed{int(s)}"
                for m, w, k, s in models[["method", "whitening", "sparsity", "seed"]].to_numpy()
            ],
        )
        np.testing.assert_allclose(got[expected.index], expected.to_numpy(), err_msg=task)


def test_references_label_scores_and_probe_intervals(tiny_run: Path):
    import scipy.sparse as sp

    from cellconcepts.evaluate.probing import ProbeSettings, task_split

    tables = tiny_run / "toy" / "tables"
    references = pd.read_csv(tables / "references.csv")
    obs = pd.read_parquet(tiny_run / "toy" / "tokens" / "obs.parquet")
    labels = references[references.task == "perturbation"].label.astype(str)
    assert sorted(labels) == sorted(obs.perturbation.dropna().astype(str).unique())
    assert references.oracle_selectivity.isna().all()  # no oracle column in this config
    assert (references.linear_reference_low <= references.linear_reference).all()
    assert (references.probe_recall_low <= references.probe_recall).all()
    assert (references.probe_recall <= references.probe_recall_high).all()

    scores = pd.read_csv(tables / "label_scores.csv", dtype={"label": str})
    assert set(scores.score) == {"insample_avg", "heldout_avg", "heldout_avg_matched", "heldout_ap"}
    permutations = 1000  # the schema's default
    assert (scores.p_value >= 1 / (permutations + 1) - 1e-12).all()
    assert (scores.above_null == (scores.q_value <= 0.05)).all()
    # the paper's score is the in-sample one: the same numbers as best_selectivity
    best = pd.read_csv(tables / "best_selectivity.csv", dtype={"label": str})
    insample = scores[scores.score == "insample_avg"].merge(best, on=["variant", "task", "label"])
    np.testing.assert_allclose(insample.value, insample.best_avg)
    # a held-out score, recomputed: the chosen feature's avg selectivity on the probe's test
    # rows of the task (whole batches), with plain numpy
    variant = "icfl_pca_k4_seed0"
    codes = sp.load_npz(tiny_run / "toy" / "models" / variant / "codes.npz").toarray() != 0
    task = {"name": "perturbation", "column": "perturbation", "group_by": "batch"}
    keep, y, _, test, _ = task_split(obs, task, ProbeSettings(max_iter=200), 10)
    rows = np.flatnonzero(keep)[test]
    assert obs.batch.iloc[rows].nunique() < obs.batch.nunique()  # whole batches held out
    mine = scores[(scores.variant == variant) & (scores.score == "heldout_avg")]
    mine = mine[mine.task == "perturbation"].set_index("label")
    classes = np.unique(y[test])
    for label in classes[:4]:
        feature = int(mine.loc[label, "feature"])
        p = np.array([codes[rows[y[test] == c], feature].mean() for c in classes])
        own = p[classes == label][0]
        expected = own - (p.sum() - own) / (len(classes) - 1)
        assert mine.loc[label, "value"] == pytest.approx(expected)
    # planted perturbations: ICFL + PCA isolates most of them held out, above null
    assert mine.above_null.mean() >= 0.7
    probing = pd.read_csv(tables / "probing.csv")
    assert ((probing.bta_low <= probing.bta) & (probing.bta <= probing.bta_high)).all()
    for suffix in (".md", ".tex"):
        assert (tiny_run / "toy" / f"headline{suffix}").stat().st_size > 100
    verdicts = pd.read_csv(tables / "selectivity_verdicts.csv")
    assert len(verdicts.drop_duplicates(["first", "second"])) == 6  # every pair of 4 variants
    assert set(verdicts.score) == set(scores.score)


def test_probes_beat_chance(tiny_run: Path):
    headline = pd.read_csv(tiny_run / "toy" / "headline.csv").set_index(["method", "whitening"])
    chance_perturbation = 1 / 11
    assert headline.loc[("raw", "none"), "bta_perturbation"] > 3 * chance_perturbation
    assert headline.loc[("icfl", "pca"), "bta_perturbation"] > 2 * chance_perturbation
    probing = pd.read_csv(tiny_run / "toy" / "tables" / "probing.csv")
    assert set(probing.representation) == {"raw", "reconstruction", "codes"}
    assert (probing.bta > probing.chance).all()
    pbmc = pd.read_csv(tiny_run / "pbmc" / "headline.csv").set_index("method")
    assert pbmc.loc["raw", "bta_bulk_labels"] > 0.3  # 10 classes, chance 0.1


def test_icfl_with_whitening_recovers_planted_atoms(tiny_run: Path):
    recovery = pd.read_csv(tiny_run / "toy" / "tables" / "atom_recovery.csv")
    assert len(recovery) == 4 * 40
    by_variant = recovery.groupby("variant").recovered.mean()
    assert by_variant["icfl_pca_k4_seed0"] >= 0.6, by_variant
    assert {"best_abs_cosine_original", "recovered_original", "role"} <= set(recovery.columns)
    # one model's best |cosine| per true atom, recomputed from the decoder and the whitening
    from cellconcepts.dictionary.models import load_model
    from cellconcepts.dictionary.whitening import Whitening

    folder = tiny_run / "toy"
    model, _ = load_model(folder / "models" / "icfl_pca_k4_seed0" / "model.pt")
    decoder = model.W_dec.detach().double().numpy()
    decoder /= np.linalg.norm(decoder, axis=0, keepdims=True)
    atoms = np.load(folder / "ground_truth" / "atoms.npy")
    pushed = Whitening.load(folder / "whitening" / "pca.npz").directions_to_model_space(atoms.T)
    pushed /= np.linalg.norm(pushed, axis=0, keepdims=True)
    best = np.abs(pushed.T @ decoder).max(axis=1)
    mine = recovery[recovery.variant == "icfl_pca_k4_seed0"].sort_values("atom")
    np.testing.assert_allclose(mine.best_abs_cosine, best, atol=1e-6)


def test_dead_features_and_selectivity_are_consistent(tiny_run: Path):
    dead = pd.read_csv(tiny_run / "toy" / "tables" / "dead_features.csv")
    assert (dead.dead_features <= dead.n_features).all()
    assert (dead.n_features == 96).all()
    counts = pd.read_csv(tiny_run / "toy" / "tables" / "selectivity_counts.csv")
    assert (counts["n_features_sel_0.5"] <= counts["n_features_sel_0.2"]).all()
    best = pd.read_csv(tiny_run / "toy" / "tables" / "best_selectivity.csv")
    perturbation = best[best.task == "perturbation"]
    assert perturbation.groupby("variant").label.nunique().eq(11).all()
    # one model's best avg selectivity per label, recomputed with plain numpy from its codes
    import scipy.sparse as sp

    codes = sp.load_npz(tiny_run / "toy" / "models" / "topk_none_k4_seed0" / "codes.npz")
    obs = pd.read_parquet(tiny_run / "toy" / "tokens" / "obs.parquet")
    active = codes.toarray() != 0
    labels = obs.perturbation.astype(str).to_numpy()
    classes = np.unique(labels)
    p = np.stack([active[labels == c].mean(axis=0) for c in classes])
    avg = p - (p.sum(axis=0) - p) / (len(classes) - 1)
    mine = perturbation[perturbation.variant == "topk_none_k4_seed0"].set_index("label")
    np.testing.assert_allclose(mine.loc[classes, "best_avg"], avg.max(axis=1))
    icfl = perturbation[perturbation.variant == "icfl_pca_k4_seed0"]
    assert np.median(icfl.best_avg) > 0.2


def test_per_model_outputs(tiny_run: Path):
    import scipy.sparse as sp

    model_dir = tiny_run / "toy" / "models" / "icfl_pca_k4_seed0"
    codes = sp.load_npz(model_dir / "codes.npz")
    assert codes.shape == (4000, 96)
    assert codes.getnnz(axis=1).max() <= 4
    # As large as the token store and read by the probes only: a temporary file.
    assert not (model_dir / "reconstructions.npy").exists()
    cosine = pd.read_parquet(model_dir / "reconstruction_cosine.parquet")
    assert len(cosine) == 4000 and cosine.cosine_model.between(-1, 1).all()
    metrics = pd.read_csv(model_dir / "metrics.csv")
    assert metrics.step.is_monotonic_increasing
    assert metrics.loss.iloc[-1] < metrics.loss.iloc[0]
    checkpoints = list((tiny_run / "toy" / "checkpoints" / "icfl_pca_k4_seed0").glob("*/last.pt"))
    assert len(checkpoints) == 1


def test_go_enrichment_of_pbmc_features(tiny_run: Path):
    import scanpy as sc
    from scipy.stats import false_discovery_control, ttest_ind

    folder = tiny_run / "pbmc" / "enrich" / "icfl_pca_k4_seed0"
    annotation = pd.read_csv(folder / "feature_annotation.csv")
    assert len(annotation) == 48
    assert set(annotation.status) <= {
        "ok",
        "all_active_cells",
        "too_few_active_cells",
        "too_few_zero_cells",
        "no_de_genes",
    }
    # real PBMC data: some features' marker genes are enriched in some GO BP term
    assert (annotation.best_fdr < 0.05).sum() >= 3
    enrichment = pd.read_parquet(folder / "enrichment.parquet")
    assert (enrichment.background_size == 765).all()  # genes measured in pbmc68k_reduced
    assert set(enrichment.direction) <= {"up", "down"}
    assert ((enrichment.term_size >= 10) & (enrichment.term_size <= 500)).all()

    # one feature's up genes, recomputed: strongly active (>= median non-zero) vs zero cells
    import scipy.sparse as sp

    codes = sp.load_npz(tiny_run / "pbmc" / "models" / "icfl_pca_k4_seed0" / "codes.npz")
    feature = int(annotation[annotation.status == "ok"].sort_values("best_fdr").feature.iloc[0])
    z = codes.tocsc()[:, feature].toarray().ravel()
    sign = 1 if (z > 0).sum() >= (z < 0).sum() else -1
    active = z * sign > 0
    strong = active & (z * sign >= np.percentile(z[active] * sign, 50))
    adata = sc.datasets.pbmc68k_reduced()
    x = adata.raw.X.toarray()
    p = np.nan_to_num(ttest_ind(x[strong], x[z == 0], equal_var=False).pvalue, nan=1.0)
    q = false_discovery_control(p)
    lfc = np.log2(np.expm1(x[strong].mean(0)) + 1e-9) - np.log2(np.expm1(x[z == 0].mean(0)) + 1e-9)
    expected = set(adata.raw.var_names[(q < 0.05) & (lfc >= 1)].str.upper())
    genes = pd.read_parquet(folder / "feature_genes.parquet")
    assert set(genes[(genes.feature == feature) & (genes.direction == "up")].gene) == expected

    labels = pd.read_csv(tiny_run / "pbmc" / "tables" / "enrichment_labels.csv")
    # 4 models x the 9 bulk_labels of at least evaluate.min_label_size (10) cells: the tenth,
    # CD4+/CD45RA+/CD25- Naive T, has 8 cells in pbmc68k_reduced and is left out.
    assert len(labels) == 4 * 9
    assert "CD4+/CD45RA+/CD25- Naive T" not in set(labels.label)
    assert pd.read_csv(folder / "gseapy_check.csv").same_terms.all()
    assert (folder / "umap.png").stat().st_size > 5000
    assert not (tiny_run / "toy" / "enrich").exists()  # synthetic data has no genes


def test_figures_and_logs(tiny_run: Path):
    for dataset in ("toy", "pbmc"):
        for name in ("training_curves", "best_selectivity", "probing_bta", "sparsity"):
            for suffix in (".png", ".pdf"):
                assert (tiny_run / dataset / "figures" / f"{name}{suffix}").stat().st_size > 5000
        assert any((tiny_run / dataset / "logs").glob("train_*.log"))
        assert any((tiny_run / dataset / "benchmarks").glob("train_*.tsv"))


def test_selective_features_point_at_their_own_tokens(tiny_run: Path):
    """Paper Fig. 3 on the toy data, whose perturbations are planted atoms: the most selective
    feature's direction meets its own label's tokens more than the others'."""
    table = pd.read_csv(tiny_run / "toy" / "tables" / "feature_cosines.csv")
    obs = pd.read_parquet(tiny_run / "toy" / "tokens" / "obs.parquet")
    assert len(table) == 6
    assert (table.n_own + table.n_other == obs["perturbation"].notna().sum()).all()
    top = table.sort_values("best_avg_selectivity").iloc[-1]
    assert top.mean_cosine_own > top.mean_cosine_other
    assert top.auc_own_vs_other > 0.8
    histograms = pd.read_csv(tiny_run / "toy" / "tables" / "feature_cosine_histograms.csv")
    own = histograms[(histograms.label == top.label) & (histograms.group == "own")]
    assert own["count"].sum() == top.n_own


def test_the_report_holds_every_figure_headline_and_annotation(tiny_run: Path, tmp_path: Path):
    report = tmp_path / "report.html"
    result = run_snakemake(tiny_run.parent, TINY, "--report", str(report))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    html = report.read_text()
    expected = [Path("toy/tables/atom_recovery.csv")]
    for dataset in ("toy", "pbmc"):
        expected.append(Path(dataset, "headline.csv"))
        expected += [Path(dataset, "tables", f"{name}.csv") for name in DATASET_TABLES]
        expected += [p.relative_to(tiny_run) for p in (tiny_run / dataset).glob("figures/*.png")]
    for name in ("feature_annotation.csv", "dotplot.png", "umap.png"):
        found = list((tiny_run / "pbmc" / "enrich").glob(f"*/{name}"))
        assert len(found) == 4, name
        expected += [p.relative_to(tiny_run) for p in found]
    assert len(expected) > 20
    for path in expected:
        assert f"results/{path}" in html, f"{path} is not in the report"
    # Filed by dataset (category) and stage (subcategory); the report lists stages sorted by
    # name, so the numbered Headline comes first.
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html).group(1))
    assert {"toy", "pbmc"} <= set(categories)
    for dataset in ("toy", "pbmc"):
        stages = sorted(categories[dataset])
        assert stages[:4] == ["1. Headline", "2. Training", "3. Probing", "4. Selectivity"]
        assert f"results/{dataset}/headline.csv" in categories[dataset]["1. Headline"]
        assert (
            f"results/{dataset}/figures/training_curves.png" in categories[dataset]["2. Training"]
        )
        assert f"results/{dataset}/figures/probing_bta.png" in categories[dataset]["3. Probing"]
        selectivity = categories[dataset]["4. Selectivity"]
        assert f"results/{dataset}/figures/best_selectivity.png" in selectivity
        # The front page links each dataset's folder and its feature browser.
        assert f'href=\\"results/{dataset}/browser/index.html\\"' in html, dataset
        assert f"app.showCategory('{dataset}')" in html, dataset
    assert "9. GO enrichment" in categories["pbmc"]
    # The front page fits a 1400 x 1000 window (workflow.rst's style: the rule graph scrolls in
    # its own box).
    if CHROMIUM:
        layout = front_page_layout(report, tmp_path)
        window = layout["window_height"]
        assert layout["text_bottom"] <= window, layout
        assert layout["graph_bottom"] is not None and layout["graph_bottom"] <= window, layout
        # The drawing is taller than the window: its box must scroll or clip, not the page.
        fits = layout["drawing_bottom"] is not None and layout["drawing_bottom"] <= window
        assert fits or layout["graph_overflow"] in ("auto", "scroll", "hidden"), layout
        assert layout["page_height"] <= window, layout


MEASURE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  let layout;
  try {
    const graph = document.querySelector("#rulegraph");
    const bottoms = (selector) => [...document.querySelectorAll(selector)]
      .map((e) => e.getBoundingClientRect().bottom);
    const drawing = document.querySelector("#rulegraph canvas, #rulegraph svg");
    layout = {
      window_height: window.innerHeight,
      graph_bottom: graph ? graph.getBoundingClientRect().bottom : null,
      graph_overflow: graph ? getComputedStyle(graph).overflowY : null,
      drawing_bottom: drawing ? drawing.getBoundingClientRect().bottom : null,
      text_bottom: Math.max(0, ...bottoms("p, li")),
      page_height: Math.max(document.documentElement.scrollHeight, document.body.scrollHeight),
    };
  } catch (error) {
    layout = {error: String(error)};
  }
  document.body.setAttribute("data-layout", JSON.stringify(layout));
}, 2000));
</script>"""


def front_page_layout(report: Path, tmp_path: Path) -> dict:
    """Where the front page's rule graph and text end in a 1400 x 1000 headless Chromium."""
    page = tmp_path / "measured.html"
    html = report.read_text()
    end = html.rindex("</body>")  # the last one: embedded results may hold the string too
    page.write_text(html[:end] + MEASURE + html[end:])
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--window-size=1400,1000", "--virtual-time-budget=20000", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    found = re.search(r'data-layout="([^"]*)"', result.stdout)
    assert found, result.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_rerun_is_a_no_op(tiny_run: Path):
    result = run_snakemake(tiny_run.parent, TINY, "--cores", "1", "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def _scheduled(result) -> dict[str, int]:
    """{rule: jobs} of a dry run's job table (empty when nothing is to be done)."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    rows = [line.split() for line in table.splitlines()[3:] if line.strip()]
    return {name: int(count) for name, count in rows if name != "all"}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # Execution settings: how a job runs, never what it computes.
        (lambda c: c["dictionary"]["train"].update(log_every=7, checkpoint_every=11), {}),
        (lambda c: c["dictionary"]["train"].update(device="cpu"), {}),
        (lambda c: c.setdefault("encode", {}).update(batch_size=512), {}),
        # A key one rule uses reruns that rule (and what depends on it) only.
        # (the paper map reads enrichment_labels: pbmc's top GO terms)
        (
            lambda c: c.setdefault("enrich", {}).update(top_terms=2),
            {"enrichment_labels": 1, "paper_map": 1},
        ),
        (
            lambda c: c["evaluate"].update(atom_recovery_threshold=0.8),
            {"atom_recovery": 4, "atom_recovery_table": 1, "report_dataset": 1},
        ),
    ],
    ids=["cadence", "device", "encode_batch", "top_terms", "recovery_threshold"],
)
def test_an_edit_reruns_only_the_jobs_that_read_it(tiny_run: Path, edit, expected):
    config = copy.deepcopy(TINY)
    edit(config)
    result = run_snakemake(tiny_run.parent, config, "--cores", "1", "-n")
    assert _scheduled(result) == expected


def test_the_workflow_runs_as_a_module_of_another_workflow(tmp_path: Path):
    """A tiny outer Snakefile imports this workflow with `module` and runs the toy dataset."""
    config = {**copy.deepcopy(TINY), "datasets": {"toy": TINY["datasets"]["toy"]}}
    config["dictionary"] = {**config["dictionary"], "methods": ["icfl"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp_path / "Snakefile").write_text(
        f"""configfile: "config.yaml"


module cellconcepts:
    snakefile:
        "{REPO / "workflow" / "Snakefile"}"
    config:
        config


use rule * from cellconcepts as cellconcepts_*


rule all:
    default_target: True
    input:
        rules.cellconcepts_all.input,
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    headline = pd.read_csv(tmp_path / "results" / "toy" / "headline.csv")
    assert sorted(headline.method) == ["icfl", "icfl", "raw"]
    assert (tmp_path / "results" / "toy" / "tables" / "atom_recovery.csv").exists()


def test_paper_map_covers_what_the_run_has(tiny_run: Path):
    """Rule paper_map runs in rule all: this config has neither the screen nor the demo's
    synthetic dataset, and pbmc only at k = 4; the map says so and reads what there is."""
    table = pd.read_csv(tiny_run / "paper_map.csv")
    absent = table[table.dataset.isin(["cellpainting", "synthetic"])]
    assert len(absent) > 20
    assert absent.demo.str.startswith("not in this run (no dataset").all()
    assert (table[(table["item"] == "Fig. 8") & (table.dataset == "pbmc")].n == 0).all()
    fig4b = table[(table["item"] == "Fig. 4B") & (table.group == "ICFL + PCA, k = 4")]
    probing = pd.read_csv(tiny_run / "pbmc" / "tables" / "probing.csv")
    rows = probing[
        (probing.task == "bulk_labels")
        & (probing.representation == "reconstruction")
        & (probing.method == "icfl")
        & (probing.whitening == "pca")
    ]
    assert fig4b.value.item() == pytest.approx(rows.bta.mean())
    assert "| Fig. 4B | BTA, task bulk_labels" in (tiny_run / "paper_map.md").read_text()
