"""The workflow's plan for a config, without Snakemake: which stages each dataset runs, and the
rules' inputs and targets."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
from snakemake.utils import validate
from testkit import REPO

from cellconcepts.layout import ResultsLayout
from cellconcepts.plan import WorkflowPlan

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def plan(demo_config) -> WorkflowPlan:
    config = copy.deepcopy(demo_config)
    validate(config, str(SCHEMA))
    return WorkflowPlan(config, ResultsLayout("out"))


def wc(**fields) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def test_each_dataset_runs_the_stages_of_its_kind(plan):
    assert [plan.has_ground_truth(d) for d in ("synthetic", "pbmc", "cellpainting")] == [
        True,
        False,
        False,
    ]
    assert plan.is_simulated_screen("cellpainting") and not plan.imports_images("cellpainting")
    assert plan.has_cellprofiler("cellpainting") and not plan.has_cellprofiler("pbmc")
    assert plan.has_enrichment("pbmc") and plan.has_enrichment("cellpainting")
    assert not plan.has_enrichment("synthetic")  # no genes
    assert plan.datasets_of_kind("microscopy") == "cellpainting"
    assert plan.datasets_of_kind("tokens") == "(?!x)x"  # matches nothing


def test_models_and_their_files_follow_the_variants(plan):
    names = plan.variant_names(wc(dataset="synthetic"))
    assert len(names) == 12 and names[0] == "icfl_pca_k8_seed0"
    pbmc = plan.variant_names(wc(dataset="pbmc"))
    assert plan.first_icfl_pca("pbmc") == next(n for n in pbmc if n.startswith("icfl_pca_"))
    files = plan.model_files("synthetic", "codes.npz")
    assert files[0] == "out/synthetic/models/icfl_pca_k8_seed0/codes.npz" and len(files) == 12
    job = wc(dataset="synthetic", method="topk", whitening="none", sparsity="8", seed="2")
    assert plan.variant_name(job) == "topk_none_k8_seed2"


def test_inputs_come_from_the_layout(plan):
    assert plan.image_store_files(wc(dataset="cellpainting")) == {
        "images": "out/cellpainting/images/images.npy",
        "image_obs": "out/cellpainting/images/obs.parquet",
    }
    heatmap = plan.heatmap_model(wc(dataset="cellpainting"))
    assert heatmap["whitening"] == "out/cellpainting/whitening/pca.npz"
    assert heatmap["codes"] == "out/cellpainting/models/icfl_pca_k8_seed0/codes.npz"
    chunks = plan.cellprofiler_chunks(wc(dataset="cellpainting"), "cells", ".parquet")
    assert chunks[0] == "out/cellpainting/cellprofiler/chunks/cells_0.parquet"
    assert len(chunks) == plan.cellprofiler_section("cellpainting")["chunks"]


def test_targets_cover_every_dataset_once(plan):
    targets = plan.all_targets()
    assert len(targets) == len(set(targets))
    assert targets[0] == "out/paper_map.md"
    for dataset in ("synthetic", "pbmc", "cellpainting"):
        assert f"out/{dataset}/headline.csv" in targets
    assert "out/synthetic/tables/atom_recovery.csv" in targets
    assert "out/cellpainting/tables/cp_correlation.csv" in targets
    assert "out/pbmc/tables/cp_correlation.csv" not in targets


@pytest.mark.parametrize("root", ["./out/", "out//", "out"])
def test_inputs_are_spelled_as_the_outputs_that_make_them(demo_config, root):
    """Snakemake matches inputs to outputs as strings: however the results folder is written,
    the image store's inputs are the simulate rule's outputs, filled in."""
    config = copy.deepcopy(demo_config)
    validate(config, str(SCHEMA))
    paths = ResultsLayout(root)
    plan = WorkflowPlan(config, paths)
    made = paths.images("images.npy").replace("{dataset}", "cellpainting")
    assert plan.image_store_files(wc(dataset="cellpainting"))["images"] == made
    assert made == "out/cellpainting/images/images.npy"
