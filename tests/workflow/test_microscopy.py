"""End to end, microscopy branch: a tiny simulated screen (MAE trained in the workflow) and a
user image store read with a user checkpoint; checks what the tables say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from browser_pages import assert_every_page_is_there, dump_dom, needs_chromium, screenshot
from testkit import TINY_VIT, run_snakemake

from cellconcepts.microscopy import checkpoints, vit
from cellconcepts.microscopy.extract import extract_crop_tokens
from cellconcepts.sources import cellpainting

pytestmark = pytest.mark.slow

ARCHITECTURE = TINY_VIT
SIMULATION = {
    "n_cell_types": 2,
    "plates_per_cell_type": 2,
    "genes_per_group": 3,
    "n_no_effect_genes": 2,
    "control_wells": 4,
    "sites_per_well": 3,
    "image_size": 32,
    "seed": 0,
}
TASKS = [
    {"name": "gene_group", "column": "gene_group", "group_by": "plate", "oracle": "n_perturbed"},
    {"name": "batch", "column": "batch"},
]


CELLPROFILER = {
    "backend": "cp_measure",
    "chunks": 2,
    "task": "gene_group",
    "target_active": 20,
    "sweep": [5, 10, 20],
}


def tiny_config(user_images: str, user_checkpoint: str) -> dict:
    microscopy = {"heatmaps": {"images_per_label": 2}, "cellprofiler": CELLPROFILER}
    return {
        "results": "results",
        "datasets": {
            "screen": {
                "kind": "microscopy",
                "microscopy": {
                    "images": "simulate",
                    "simulate": SIMULATION,
                    "model": {
                        "architecture": ARCHITECTURE,
                        "mae": {
                            "steps": 30,
                            "batch_size": 16,
                            "warmup_steps": 5,
                            "decoder_dim": 32,
                        },
                    },
                    **microscopy,
                },
                "control": {"column": "gene", "values": ["non-targeting"]},
                "tasks": TASKS,
            },
            "mine": {
                "kind": "microscopy",
                "microscopy": {
                    "images": user_images,
                    "model": {"checkpoint": user_checkpoint, "architecture": ARCHITECTURE},
                    "layer": 1,
                    **microscopy,
                },
                "control": {"column": "gene", "values": ["non-targeting"]},
                "tasks": TASKS,
                "dictionary": {"methods": ["icfl"]},
            },
        },
        "dictionary": {
            "n_features": 32,
            "sparsity": [4],
            "train": {"steps": 100, "batch_size": 64},
        },
        "evaluate": {"probe": {"max_iter": 200}},
        # 20 screened genes, 3 per planted term: the 10-gene floor would leave no term
        "enrich": {"min_term_size": 2, "check_lists": 2},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("microscopy")
    # A user's image store (images + annotations only, no masks) and a user checkpoint in the
    # Hugging Face layout, standing in for real images and OpenPhenom.
    screen = cellpainting.simulate_screen(**{**SIMULATION, "seed": 1}, progress=False)
    store = workdir / "my_images"
    store.mkdir()
    np.save(store / "images.npy", screen.images)
    screen.obs.to_parquet(store / "obs.parquet")
    torch.manual_seed(0)
    checkpoints.save_pretrained(vit.ViTEncoder(vit.ViTConfig(**ARCHITECTURE)), workdir / "my_model")
    result = run_snakemake(workdir, tiny_config("my_images", "my_model"), "--cores", "2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return workdir / "results"


def test_layer_choice_and_token_store(run: Path):
    probes = pd.read_csv(run / "screen" / "tables" / "layer_probe.csv")
    assert sorted(probes.layer.unique()) == [1, 2]
    assert set(probes.task) == {"gene_group", "batch"}
    choice = json.loads((run / "screen" / "embedding" / "layer.json").read_text())
    on_task = probes[probes.task == "gene_group"].set_index("layer")["bta"]
    assert choice["layer"] == int(on_task.idxmax())
    assert probes[probes.chosen].layer.unique().tolist() == [choice["layer"]]
    images = pd.read_parquet(run / "screen" / "images" / "obs.parquet")
    obs = pd.read_parquet(run / "screen" / "tokens" / "obs.parquet")
    tokens = np.load(run / "screen" / "tokens" / "tokens.npy")
    assert tokens.shape == (len(images), ARCHITECTURE["embed_dim"])
    assert obs.token_id.tolist() == images.image_id.tolist()
    assert obs.is_control.tolist() == (images.gene == "non-targeting").tolist()
    # The per-layer tokens are a temporary file; the chosen layer's, recomputed from the saved
    # encoder, are the store.
    assert not (run / "screen" / "embedding" / "layer_tokens.npy").exists()
    encoder = checkpoints.load_encoder(run / "screen" / "embedding" / "encoder")
    pixels = np.load(run / "screen" / "images" / "images.npy")
    expected = extract_crop_tokens(encoder, pixels, [choice["layer"]], progress=False)
    np.testing.assert_allclose(tokens, expected[choice["layer"]], rtol=1e-5, atol=1e-5)


def test_label_selectivity_covers_every_planted_group(run: Path):
    table = pd.read_csv(run / "screen" / "tables" / "label_selectivity.csv")
    groups = pd.read_csv(run / "screen" / "images" / "groups.csv")
    summary = ["fraction >= 0.5", "fraction above null (held out)"]
    assert table.label.tolist() == [*sorted(groups.gene_group), *summary]
    variants = [
        "icfl_none_k4_seed0",
        "icfl_pca_k4_seed0",
        "topk_none_k4_seed0",
        "topk_pca_k4_seed0",
    ]
    assert table.columns[:3].tolist() == ["label", "oracle_selectivity", "linear_reference"]
    assert sorted(table.columns[3:]) == variants
    # each cell is its model's best avg selectivity for the group, and the summary rows
    # recount them from the per-model files
    rows = table.set_index("label")
    for variant in variants:
        folder = run / "screen" / "models" / variant
        best = pd.read_csv(folder / "best_selectivity.csv")
        best = best[best.task == "gene_group"].set_index("label")["best_avg"]
        np.testing.assert_allclose(rows.loc[groups.gene_group, variant], best[groups.gene_group])
        assert rows.loc["fraction >= 0.5", variant] == (best[groups.gene_group] >= 0.5).mean()
        scores = pd.read_csv(folder / "label_scores.csv")
        held = scores[(scores.task == "gene_group") & (scores.score == "heldout_avg")]
        held = held.set_index("label").loc[groups.gene_group]
        assert rows.loc["fraction above null (held out)", variant] == pytest.approx(
            held.above_null.mean()
        )


def test_references_and_group_detectability(run: Path):
    tables = run / "screen" / "tables"
    planted = sorted(pd.read_csv(run / "screen" / "images" / "groups.csv").gene_group)
    references = pd.read_csv(tables / "references.csv")
    oracle = references[references.task == "gene_group"].set_index("label")["oracle_selectivity"]
    # the oracle feature is active on the label's crops holding a perturbed cell, nowhere else:
    # recounted from the simulator's own per-cell truth, not from the token store's column
    cells = pd.read_parquet(run / "screen" / "images" / "cells.parquet")
    images = pd.read_parquet(run / "screen" / "images" / "obs.parquet")
    carrying = np.zeros(len(images), dtype=bool)
    carrying[cells.loc[cells.perturbed, "image_index"].unique()] = True
    expected = pd.Series(carrying).groupby(images.gene_group.to_numpy()).mean()
    np.testing.assert_allclose(oracle[planted], expected[planted])
    assert oracle["non-targeting"] == 0.0
    assert references[references.task == "batch"].oracle_selectivity.isna().all()
    headline = pd.read_csv(run / "screen" / "headline.csv")
    models = headline[headline.method != "raw"]
    scores = pd.read_csv(tables / "label_scores.csv")
    held = scores[(scores.score == "heldout_avg") & (scores.task == "gene_group")]
    recount = held.groupby("variant").above_null.mean()
    names = (
        models.method + "_" + models.whitening + "_k4_seed" + models.seed.astype(int).astype(str)
    )
    np.testing.assert_allclose(models["labels_above_null_gene_group"], recount[names].to_numpy())

    groups = pd.read_csv(tables / "group_detectability.csv")
    assert groups.label.tolist() == planted
    assert groups.cp_probe_recall.between(0, 1).all()
    assert (groups.raw_probe_low <= groups.raw_probe_recall).all()
    assert groups.encoder_sees.tolist() == (groups.raw_probe_low > groups.chance).tolist()
    for variant in ("icfl_pca_k4", "topk_none_k4"):
        seeds = held[held.variant.str.startswith(variant)].set_index("label")
        np.testing.assert_allclose(groups[f"heldout_{variant}"], seeds.loc[planted, "value"])
    differences = pd.read_csv(tables / "selectivity_differences.csv")
    pairs = differences.drop_duplicates(["first", "second"])
    assert len(pairs) == 6  # every pair of the four variants
    inside = (differences.low <= 0) & (differences.high >= 0)
    shown = differences.verdict != "not compared"
    assert (differences.verdict[shown] == "no difference").tolist() == inside[shown].tolist()


def test_heatmaps_and_single_cell_check(run: Path):
    tables = run / "screen" / "tables"
    selected = pd.read_csv(run / "screen" / "heatmaps" / "selected.csv")
    channels = pd.read_csv(tables / "heatmap_channels.csv")
    assert channels.image_id.tolist() == selected.image_id.tolist()
    names = list(cellpainting.CHANNELS)
    patches = np.load(run / "screen" / "heatmaps" / "patch_tokens.npy")
    assert patches.shape[1:] == (4, 4, ARCHITECTURE["embed_dim"])
    # each image's heatmap-channel r, recomputed with plain numpy: the cosine of the feature's
    # direction with every patch token centred on the control mean (the last entry), against
    # each channel averaged over every patch
    from cellconcepts.dictionary.models import decoder_directions, load_model
    from cellconcepts.dictionary.whitening import Whitening

    model, _ = load_model(run / "screen" / "models" / "icfl_pca_k4_seed0" / "model.pt")
    whitening = Whitening.load(run / "screen" / "whitening" / "pca.npz")
    directions = whitening.pullback(decoder_directions(model))
    pixels = np.load(run / "screen" / "images" / "images.npy")
    for i, row in enumerate(selected.itertuples(index=False)):
        sign = np.sign(selected.loc[selected.label == row.label, "activation"].sum()) or 1.0
        direction = directions[:, row.feature] * sign
        centred = patches[row.patch_index].astype(float) - patches[-1]
        heat = centred @ direction / np.linalg.norm(centred, axis=-1) / np.linalg.norm(direction)
        image = pixels[row.row].astype(float)
        side = image.shape[-1] // heat.shape[0]
        pooled = image.reshape(len(names), 4, side, 4, side).mean(axis=(2, 4))
        expected = [np.corrcoef(heat.ravel(), channel.ravel())[0, 1] for channel in pooled]
        np.testing.assert_allclose(channels.loc[i, names].to_numpy(float), expected, atol=1e-5)
    # the summary's rank of the planted channel, recounted from the per-image table
    summary = pd.read_csv(tables / "heatmap_channel_summary.csv").set_index("label")
    planted = pd.read_csv(run / "screen" / "images" / "groups.csv").set_index("gene_group")
    assert summary.expected_channel.tolist() == planted.loc[summary.index, "channel"].tolist()
    for kind in ("", "_vs_control", "_oracle_vs_control"):
        means = channels.groupby("label")[[f"{c}{kind}" for c in names]].mean()
        means.columns = names
        for label, expected_channel in summary.expected_channel.items():
            above = (means.loc[label] > means.loc[label, expected_channel]).sum()
            assert summary.loc[label, f"expected_rank{kind}"] == above + 1, (label, kind)
    adjusted = channels[[f"{c}_vs_control" for c in names]].to_numpy()
    assert not np.allclose(adjusted, channels[names].to_numpy(), equal_nan=True)

    per_cell = pd.read_csv(tables / "single_cell_alignment.csv")
    cells = pd.read_parquet(run / "screen" / "images" / "cells.parquet")
    images = pd.read_parquet(run / "screen" / "images" / "obs.parquet")
    cells["image_id"] = images.image_id.to_numpy()[cells.image_index]
    for label, rows in per_cell[per_cell.category != "background"].groupby("label"):
        truth = cells[cells.image_id.isin(rows.image_id.unique())]
        assert (rows.category == "perturbed").sum() == truth.perturbed.sum(), label
        assert len(rows) == len(truth), label
    tests = pd.read_csv(tables / "single_cell_summary.csv")
    assert set(tests.comparison) == {
        "perturbed > unperturbed",
        "perturbed > background",
        "unperturbed > background",
    }
    p = tests.p_value.dropna()
    assert len(p) and p.between(0, 1).all()
    # the check's oracle reference: a heatmap that is exactly the perturbed cells, one per label
    # (NaN where the label's images hold no unperturbed cell, or no cell is called dark)
    for column in ("oracle_recall", "oracle_precision"):
        assert tests[column].dropna().between(0, 1).all()
        assert (tests.groupby("label")[column].nunique(dropna=False) == 1).all()
    for name in ["token_heatmaps", "single_cell_alignment", "layer_probe"]:
        assert (run / "screen" / "figures" / f"{name}.png").stat().st_size > 5000


def test_user_images_with_a_user_checkpoint(run: Path):
    mine = run / "mine"
    assert json.loads((mine / "embedding" / "layer.json").read_text())["layer"] == 1
    assert sorted(pd.read_csv(mine / "tables" / "layer_probe.csv").layer.unique()) == [1]
    assert not (mine / "embedding" / "layer_tokens.npy").exists()  # temporary
    assert not (mine / "embedding" / "encoder").exists()  # no MAE trained for it
    headline = pd.read_csv(mine / "headline.csv")
    assert sorted(headline.method) == ["icfl", "icfl", "raw"]
    assert (mine / "tables" / "heatmap_channels.csv").exists()
    assert not (mine / "tables" / "single_cell_summary.csv").exists()  # no masks given


def test_cellprofiler_baseline(run: Path):
    screen, tables = run / "screen", run / "screen" / "tables"
    images = pd.read_parquet(screen / "images" / "obs.parquet")
    summary = pd.read_csv(tables / "cellprofiler_profiles.csv").iloc[0]
    assert summary.backend == "cp_measure"
    assert summary.n_images == len(images)
    assert summary.n_features > 100
    profiles = pd.read_parquet(screen / "cellprofiler" / "profiles.parquet")
    assert profiles.image_id.tolist() == images.image_id.tolist()
    assert np.isfinite(profiles.drop(columns="image_id").to_numpy()).all()

    import scipy.sparse as sp

    codes = sp.load_npz(screen / "cellprofiler" / "codes.npz")
    assert codes.shape == (len(images), summary.n_features)
    thresholds = pd.read_csv(screen / "cellprofiler" / "thresholds.csv")
    assert thresholds.mean_active[0] == pytest.approx(codes.nnz / codes.shape[0])
    if abs(thresholds.mean_active[0] - CELLPROFILER["target_active"]) > 1:
        # below the reachable floor: the nearest reachable count, at the smallest alpha
        assert thresholds.mean_active[0] > CELLPROFILER["target_active"]
        assert thresholds.alpha[0] < 1e-6
    assert set(np.unique(codes.data)) <= {-1.0, 1.0}
    sweep = pd.read_csv(screen / "cellprofiler" / "sweep.csv")
    missed = abs(sweep.mean_active - sweep.target) > 1
    assert ((sweep.alpha[missed] < 1e-6) | (sweep.alpha[missed] > 0.5 - 1e-6)).all()
    assert sweep.mean_best_avg.between(-1, 1).all()

    per_label = pd.read_csv(tables / "cp_comparison.csv")
    groups = pd.read_csv(screen / "images" / "groups.csv")
    assert set(per_label.label) >= set(groups.gene_group)
    correlation = pd.read_csv(tables / "cp_correlation.csv")
    assert len(correlation) == 4  # icfl/topk x pca/none
    assert correlation.pearson_r.between(-1, 1).all()
    assert (correlation.ci_low <= correlation.pearson_r).all()
    assert (screen / "figures" / "cp_comparison.png").stat().st_size > 5000

    segmentation = pd.read_csv(tables / "cp_segmentation.csv").iloc[0]
    cells = pd.read_parquet(screen / "images" / "cells.parquet")
    assert segmentation.n_true == len(cells)
    assert 0.5 < segmentation.f1 <= 1
    mine = run / "mine" / "tables"
    assert (mine / "cp_correlation.csv").exists()
    assert not (mine / "cp_segmentation.csv").exists()  # no masks given


def test_go_enrichment_of_screen_features(run: Path):
    from scipy.stats import hypergeom

    from cellconcepts.store.gene_sets import go_bp_2023_path, read_gmt

    obs = pd.read_parquet(run / "screen" / "tokens" / "obs.parquet")
    screened = sorted(set(obs.gene) - {"non-targeting"})
    folder = run / "screen" / "enrich" / "icfl_pca_k4_seed0"
    enrichment = pd.read_parquet(folder / "enrichment.parquet")
    assert (enrichment.background_size == len(screened)).all()
    assert ((enrichment.p_value > 0) & (enrichment.p_value <= 1)).all()
    assert (enrichment.fdr >= enrichment.p_value - 1e-12).all()
    assert set(enrichment.direction) == {"selective"}
    # the best term of the most enriched feature, recomputed from the GMT and the gene list
    top = enrichment.sort_values("p_value").iloc[0]
    genes = pd.read_parquet(folder / "feature_genes.parquet")
    listed = set(genes[genes.feature == top.feature].gene)
    term = set(read_gmt(go_bp_2023_path())[top.term]) & set(screened)
    overlap = len(listed & term)
    assert (top.overlap, top.list_size, top.term_size) == (overlap, len(listed), len(term))
    expected = hypergeom.sf(overlap - 1, len(screened), len(term), len(listed))
    assert top.p_value == pytest.approx(expected, rel=1e-9)
    assert set(top.genes.split(";")) == listed & term

    annotation = pd.read_csv(folder / "feature_annotation.csv")
    assert len(annotation) == 32 and set(annotation.status) <= {"ok", "no_selective_genes"}
    check = pd.read_csv(folder / "gseapy_check.csv")
    assert set(check["sample"]) == {"top", "random"} and len(check) == 4
    assert check.same_terms.all() and check.same_overlaps.all()
    assert (check.max_relative_p_difference <= 1e-9).all()
    assert (folder / "dotplot.png").stat().st_size > 5000
    assert (folder / "dotplot.pdf").exists()
    assert not (folder / "umap.png").exists()  # the UMAP is drawn for scRNA datasets

    recovery = pd.read_csv(run / "screen" / "tables" / "go_recovery.csv")
    groups = pd.read_csv(run / "screen" / "images" / "groups.csv")
    assert len(recovery) == 4 * len(groups)  # four models (icfl, topk x pca, none) x groups
    assert set(recovery.planted_term) == set(groups.go_term)
    hits = recovery[recovery.recovered]
    assert (hits.planted_rank == 1).all() and (hits.planted_fdr < 0.05).all()
    assert hits.ties_identical.all()
    assert (recovery.recovered_strict <= recovery.recovered).all()
    assert (recovery[recovery.recovered_strict].n_tied_at_top == 1).all()
    assert recovery.random_feature_rate.between(0, 1).all()
    summary = pd.read_csv(run / "screen" / "tables" / "go_recovery_summary.csv")
    per_variant = recovery.groupby("variant", sort=False)
    assert summary.recovered.tolist() == per_variant.recovered.sum().tolist()
    assert summary.recovered_strict.tolist() == per_variant.recovered_strict.sum().tolist()
    # the perfect-list reference: each group's own genes as the list, the same for every model
    perfect = recovery.groupby("group")[["perfect_recovered", "perfect_list_size"]].nunique()
    assert (perfect == 1).all().all()
    assert (
        recovery.perfect_list_size
        == groups.set_index("gene_group").loc[recovery.group, "n_genes"].to_numpy()
    ).all()
    perfect_list = recovery.drop_duplicates("group").perfect_recovered.mean()
    assert summary.perfect_list.eq(perfect_list).all() and (summary.fraction <= 1).all()
    # the user's images (not simulated) are enriched too, without a ground-truth table
    assert (run / "mine" / "enrich" / "icfl_pca_k4_seed0" / "feature_annotation.csv").exists()
    assert not (run / "mine" / "tables" / "go_recovery.csv").exists()


def test_inference_batch_size_and_device_rerun_nothing(run: Path):
    """How images are batched through the encoder and where it runs are execution settings:
    editing them schedules no job (they used to rerun every enrichment job)."""
    config = tiny_config("my_images", "my_model")
    for name in ("screen", "mine"):
        config["datasets"][name]["microscopy"].update(batch_size=7, device="cpu")
    result = run_snakemake(run.parent, config, "--cores", "1", "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, (result.stdout + result.stderr)[
        -3000:
    ]


@needs_chromium
def test_feature_browser_opens_in_chromium(run: Path, tmp_path: Path):
    browser = run / "screen" / "browser"
    models = sorted(p.name for p in (run / "screen" / "models").iterdir())
    assert assert_every_page_is_there(browser) == 32 * len(models)
    home = dump_dom(browser / "index.html")
    assert len(re.findall(r"<tr", home)) == 1 + 32 * len(models)  # header + every feature
    best = pd.read_csv(run / "screen" / "models" / models[0] / "best_selectivity.csv")
    feature = int(best.best_feature.iloc[0])
    page = dump_dom(browser / models[0] / f"feature_{feature}.html")
    assert f"Feature {feature} of {models[0]}" in page
    crops = re.findall(r'<img src="\.\./crops/([\d-]+_[\d-]+)\.png"', page)
    assert crops and all((browser / "crops" / f"{c}.png").is_file() for c in crops)
    assert "gene_group: " in page and "Nearest features" in page  # named caption fields
    assert re.search(r"red = <b>\w+</b>", page)  # the channel legend
    screenshot(browser / models[0] / f"feature_{feature}.html", tmp_path / "feature.png")
