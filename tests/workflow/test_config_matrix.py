"""The config shapes users write, end to end: each run is one Snakemake call over several
datasets, each dataset one shape, checked for every output its config enables.

A covering design rather than the full product (the product is over 500 runs): every level
of every factor appears in at least one dataset, and the levels that interact (methods with
whitening, microscopy inputs with heatmaps and CellProfiler) appear together.

| whitening | dataset | input | methods | sparsity | seeds | other |
| --- | --- | --- | --- | --- | --- | --- |
| [none] | tok_exclude | tokens .parquet | icfl | [2] | [0] | a task with `exclude` |
| [none] | tok_sweep | tokens .npy + obs.csv | topk | [2, 4] | [0, 1] | `group_by` |
| [none] | rna_gmt | scrna | both | [4] | [0] | GMT with descriptions |
| [pca] | user_store | image store | icfl | [2] | [0] | no `is_control`, heatmaps |
| [pca] | one_plate | image store | topk | [2, 4] | [0] | controls on 1 plate, CP, plain GMT |
| [pca] | load_data | LoadData CSV | both | [2] | [0, 1] | MAE, no heatmaps, no CP |
| [pca, none] | tok_both | tokens .parquet | both | [2, 4] | [0] | `exclude` |

CP: the CellProfiler baseline (cp_measure backend); plain GMT: without descriptions. One run
per whitening setting (a global key); the other factors are per-dataset.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import tifffile
import torch
from testkit import TINY_VIT, run_snakemake

from cellconcepts.microscopy import checkpoints, vit
from cellconcepts.sources import cellpainting

pytestmark = pytest.mark.slow

TRAINING = {"steps": 60, "batch_size": 64, "checkpoint_every": 30}
DICTIONARY = {
    "n_features": 16,
    "sparsity": [2],
    "seeds": [0],
    "icfl": {"atoms_per_iteration": 2},
    "train": TRAINING,
}
GUIDES = ["non-targeting", "G1", "G2", "G3", "G4"]
DIM = 8
CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito", "Brightfield"]
SCREEN = {
    "n_cell_types": 2,
    "plates_per_cell_type": 2,
    "genes_per_group": 3,
    "n_no_effect_genes": 2,
    "control_wells": 12,
    "sites_per_well": 3,
    "image_size": 32,
    "seed": 1,
}


# --------------------------------------------------------------------------- inputs


def _tokens(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Embeddings with one cluster per guide, a fifth of them non-targeting controls, on 4
    plates (crossed with the guides) and 2 cell types."""
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    centres = 2.0 * rng.normal(size=(len(GUIDES), DIM))
    values = centres[rows % len(GUIDES)] + rng.normal(size=(n, DIM))
    table = pd.DataFrame(values.astype(np.float32), columns=[f"emb_{i}" for i in range(DIM)])
    table["guide"] = np.array(GUIDES)[rows % len(GUIDES)]
    table["plate"] = [f"p{(i // len(GUIDES)) % 4}" for i in rows]
    table["cell_type"] = np.where((rows // 7) % 2 == 0, "A", "B")
    return table


def _tokens_dataset(path: str, **dataset: Any) -> dict:
    section = {
        "kind": "tokens",
        "tokens": {"path": path, "embedding_columns": "emb_"},
        "control": {"column": "guide", "values": ["non-targeting"]},
        "split": {"test_fraction": 0.25, "seed": 0},
        "tasks": [
            {"name": "guide", "column": "guide", "exclude": ["non-targeting"]},
            {"name": "cell_type", "column": "cell_type"},
        ],
    }
    return section | dataset


def _write_gmt(path: Path, descriptions: bool) -> None:
    """GO-like terms over pbmc68k_reduced's marker genes; without descriptions the first
    gene follows the term's name directly."""
    terms = {
        "B_CELL_PROGRAMME": ["CD79A", "CD79B", "MS4A1", "CD19", "CD74", "HLA-DRA", "CD37"],
        "MONOCYTE_PROGRAMME": ["LYZ", "S100A8", "S100A9", "CD14", "FCGR3A", "CST3", "TYROBP"],
        "NK_PROGRAMME": ["NKG7", "GNLY", "GZMB", "PRF1", "KLRD1", "CTSW", "FCER1G"],
        "T_CELL_PROGRAMME": ["CD3D", "CD3E", "IL7R", "CCR7", "LDHB", "CD8A", "CD2"],
    }
    lines = []
    for name, genes in terms.items():
        fields = [name, f"{name.lower()} (test)"] if descriptions else [name]
        lines.append("\t".join(fields + genes))
    path.write_text("\n".join(lines) + "\n")


def _scrna_dataset(gmt: str) -> dict:
    return {
        "kind": "scrna",
        "scrna": {"source": "pbmc68k_reduced", "autoencoder": {"epochs": 5, "latent_dim": 12}},
        "control": "all",
        "split": {"test_fraction": 0.2, "seed": 0},
        "tasks": [{"name": "bulk_labels", "column": "bulk_labels"}],
        "dictionary": {"n_features": 24, "sparsity": [4], "methods": ["icfl", "topk"]},
        "enrich": {
            "gene_sets": gmt,
            "min_term_size": 3,
            "label_task": "bulk_labels",
            "labels": ["CD19+ B", "CD14+ Monocyte"],
        },
    }


def _image_store(root: Path, name: str, *, controls_on_one_plate: bool) -> pd.DataFrame:
    """A user's image store (images.npy + obs.parquet with `image_id, gene, gene_group,
    plate`, no `is_control`, no masks), from the simulated screen; with
    ``controls_on_one_plate`` the non-targeting images of every other plate are left out."""
    screen = cellpainting.simulate_screen(**SCREEN, progress=False)
    obs = screen.obs[["image_id", "gene", "gene_group", "plate", "well"]].copy()
    keep = np.ones(len(obs), dtype=bool)
    if controls_on_one_plate:
        first = sorted(obs.plate.unique())[0]
        keep = (obs.gene != "non-targeting").to_numpy() | (obs.plate == first).to_numpy()
    store = root / name
    store.mkdir()
    np.save(store / "images.npy", screen.images[keep])
    obs = obs[keep].reset_index(drop=True)
    obs.to_parquet(store / "obs.parquet")
    return obs


def _load_data_screen(root: Path) -> pd.DataFrame:
    """Three plates of 10 sites (three genes, a third of the sites controls: 40 control
    tiles for 32 dimensions), 6 channels of 64 px as 16-bit TIFFs with a LoadData CSV."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60000, (30, 6, 64, 64), dtype=np.uint16)
    rows = []
    genes = ["non-targeting", "ACTB", "TP53"]
    for i, image in enumerate(images):
        plate, gene = f"P{i // 10 + 1}", genes[i % 3]
        row = {"Metadata_plate": plate, "Metadata_well": f"A{i % 10:02d}", "Metadata_gene": gene}
        for channel, plane in zip(CHANNELS, image, strict=True):
            file = f"{row['Metadata_well']}_{channel}.tif"
            (root / "screen" / plate).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "screen" / plate / file, plane)
            row |= {f"FileName_{channel}": file, f"PathName_{channel}": plate}
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(root / "screen" / "load_data.csv", index=False)
    return table


def _user_checkpoint(root: Path) -> str:
    torch.manual_seed(0)
    checkpoints.save_pretrained(vit.ViTEncoder(vit.ViTConfig(**TINY_VIT)), root / "my_model")
    return "my_model"


def _microscopy_dataset(images: Any, **microscopy: Any) -> dict:
    return {
        "kind": "microscopy",
        "microscopy": {"images": images, **microscopy},
        "control": {"column": "gene", "values": ["non-targeting"]},
        "split": {"test_fraction": 0.25, "seed": 0},
    }


def _config(whitening: list[str], datasets: dict) -> dict:
    return {
        "results": "results",
        "datasets": datasets,
        "whitening": {"methods": whitening},
        "dictionary": copy.deepcopy(DICTIONARY),
        "evaluate": {
            "probe": {"max_iter": 100},
            "significance": {"permutations": 50},
            "bootstrap": {"replicates": 100},
        },
        "browser": {"enabled": False},
    }


def run_none(root: Path) -> dict:
    table = _tokens()
    table.to_parquet(root / "tok_exclude.parquet")
    sweep = _tokens(seed=1)
    np.save(root / "tok_sweep.npy", sweep.filter(like="emb_").to_numpy())
    obs = sweep.drop(columns=sweep.filter(like="emb_").columns)
    obs.insert(0, "token_id", [f"{i:05d}" for i in range(len(obs))])
    obs.to_csv(root / "tok_sweep_obs.csv", index=False)
    _write_gmt(root / "terms.gmt", descriptions=True)
    datasets = {
        "tok_exclude": _tokens_dataset(
            "tok_exclude.parquet", dictionary={"methods": ["icfl"], "seeds": [0]}
        ),
        "tok_sweep": _tokens_dataset(
            "tok_sweep.npy",
            tokens={"path": "tok_sweep.npy", "obs_path": "tok_sweep_obs.csv"},
            tasks=[
                {"name": "guide", "column": "guide"},
                {"name": "cell_type", "column": "cell_type", "group_by": "plate"},
            ],
            dictionary={"methods": ["topk"], "sparsity": [2, 4], "seeds": [0, 1]},
        ),
        "rna_gmt": _scrna_dataset("terms.gmt"),
    }
    return _config(["none"], datasets)


def run_pca(root: Path) -> dict:
    checkpoint = _user_checkpoint(root)
    _image_store(root, "user_images", controls_on_one_plate=False)
    screen = _image_store(root, "one_plate_images", controls_on_one_plate=True)
    # the planted groups as gene sets, without descriptions: disjoint terms of 3 genes
    planted = screen[~screen.gene_group.isin(["non-targeting", "no_effect"])]
    lines = [
        "\t".join([f"GROUP_{group.upper()}", *sorted(genes.unique())])
        for group, genes in planted.groupby("gene_group")["gene"]
    ]
    (root / "screen_terms.gmt").write_text("\n".join(lines) + "\n")
    _load_data_screen(root)
    model = {"checkpoint": checkpoint, "architecture": TINY_VIT}
    datasets = {
        "user_store": _microscopy_dataset(
            "user_images",
            model=model,
            layer=1,
            heatmaps={"task": "gene_group", "images_per_label": 2},
            cellprofiler={"enabled": False},
        )
        | {
            "tasks": [{"name": "gene_group", "column": "gene_group", "group_by": "plate"}],
            "dictionary": {"methods": ["icfl"]},
            "enrich": {"enabled": False},
        },
        "one_plate": _microscopy_dataset(
            "one_plate_images",
            model=model,
            layer=2,
            browser_rgb=[4, 3, 0],
            heatmaps={"task": "gene_group", "images_per_label": 2},
            cellprofiler={"backend": "cp_measure", "chunks": 2, "task": "gene_group"},
        )
        | {
            "tasks": [
                {"name": "gene_group", "column": "gene_group"},
                {"name": "gene", "column": "gene", "exclude": ["non-targeting"]},
            ],
            "resample_unit": ["plate", "well"],
            "dictionary": {"methods": ["topk"], "sparsity": [2, 4]},
            # 18 screened genes, 3 per planted term: the 10-gene floor would leave no term
            "enrich": {
                "gene_sets": "screen_terms.gmt",
                "min_term_size": 2,
                "check_lists": 2,
                "label_task": "gene_group",
            },
        },
        "load_data": _microscopy_dataset(
            {"load_data": "screen/load_data.csv", "channels": CHANNELS, "tile": 32},
            model={"architecture": TINY_VIT, "mae": {"steps": 5, "batch_size": 8}},
            layer_task="gene",
            heatmaps={"enabled": False, "task": "gene"},
            cellprofiler={"enabled": False},
        )
        | {
            "tasks": [{"name": "gene", "column": "gene"}],
            "dictionary": {"seeds": [0, 1]},
            "enrich": {"enabled": False},
        },
    }
    return _config(["pca"], datasets)


def run_both(root: Path) -> dict:
    _tokens(seed=2).to_parquet(root / "tok_both.parquet")
    datasets = {
        "tok_both": _tokens_dataset("tok_both.parquet", dictionary={"sparsity": [2, 4]}),
    }
    return _config(["pca", "none"], datasets)


RUNS: dict[str, Callable[[Path], dict]] = {"none": run_none, "pca": run_pca, "both": run_both}


# --------------------------------------------------------------------------- expectations


def _expected_variants(config: dict, name: str) -> set[str]:
    """Every model the dataset's config asks for, from the config alone."""
    own = config["datasets"][name].get("dictionary", {})
    methods = own.get("methods", ["icfl", "topk"])
    sparsities = own.get("sparsity", config["dictionary"]["sparsity"])
    seeds = own.get("seeds", config["dictionary"]["seeds"])
    return {
        f"{method}_{whitening}_k{k}_seed{seed}"
        for method in methods
        for whitening in config["whitening"]["methods"]
        for k in sparsities
        for seed in seeds
    }


def _task_labels(obs: pd.DataFrame, task: dict) -> set[str]:
    """The labels a task scores: at least 10 tokens (evaluate.min_label_size), not excluded."""
    counts = obs[task["column"]].astype(str).value_counts()
    return set(counts[counts >= 10].index) - set(task.get("exclude", []))


def _check_models(results: Path, config: dict, name: str, obs: pd.DataFrame) -> None:
    """Headline rows, per-model files and label scores for exactly the configured models and
    the labels of every task; one comparison per pair of (method, whitening)."""
    expected = _expected_variants(config, name)
    headline = pd.read_csv(results / "headline.csv")
    models = headline[headline.method != "raw"]
    made = set(
        models.method
        + "_"
        + models.whitening
        + "_k"
        + models.sparsity.astype(int).astype(str)
        + "_seed"
        + models.seed.astype(int).astype(str)
    )
    assert made == expected
    assert (headline.method == "raw").sum() == 1
    tasks = config["datasets"][name]["tasks"]
    for variant in expected:
        folder = results / "models" / variant
        for file in ("model.pt", "codes.npz", "best_selectivity.csv"):
            assert (folder / file).stat().st_size > 0, folder / file
        scores = pd.read_csv(folder / "label_scores.csv", dtype={"label": str})
        for task in tasks:
            scored = set(scores[scores.task == task["name"]].label)
            assert scored == _task_labels(obs, task), (variant, task["name"])
        k = int(variant.split("_k")[1].split("_")[0])
        codes = sp.load_npz(folder / "codes.npz")
        assert (np.diff(codes.tocsr().indptr) <= k).all()
    combos = {v.rsplit("_k", 1)[0] for v in expected}
    differences = pd.read_csv(results / "tables" / "selectivity_differences.csv")
    pairs = {frozenset(p) for p in differences[["first", "second"]].itertuples(index=False)}
    assert len(pairs) == len(combos) * (len(combos) - 1) // 2
    assert {v for pair in pairs for v in pair} == (combos if len(combos) > 1 else set())
    assert (results / "tables" / "selectivity_verdicts.csv").exists()


def _check_controls(results: Path, config: dict, name: str) -> pd.DataFrame:
    """The token store's controls are the rows the dataset's `control` key names."""
    obs = pd.read_parquet(results / "tokens" / "obs.parquet")
    control = config["datasets"][name]["control"]
    if control == "all":
        assert obs.is_control.all()
    else:
        assert obs.is_control.tolist() == obs[control["column"]].isin(control["values"]).tolist()
    return obs


def _check_gene_set_sizes(results: Path, gmt: Path, genes: set[str]) -> None:
    """Each term's size over the background ``genes``, recounted from the GMT: no gene lost
    to a guessed description column."""
    expected = {}
    for line in gmt.read_text().splitlines():
        fields = line.split("\t")
        expected[fields[0]] = len({f.upper() for f in fields[1:]} & genes)
    found = False
    for folder in (results / "enrich").iterdir():
        enrichment = pd.read_parquet(folder / "enrichment.parquet")
        sizes = enrichment.drop_duplicates("term").set_index("term")["term_size"]
        assert sizes.to_dict() == {t: expected[t] for t in sizes.index}
        found |= len(sizes) > 0
    assert found


@pytest.fixture(scope="module", params=list(RUNS))
def matrix_run(request, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp(f"matrix_{request.param}")
    config = RUNS[request.param](root)
    result = run_snakemake(root, config, "--cores", "2", timeout=2400)
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    return root, config


def test_every_dataset_makes_every_output_its_config_enables(matrix_run):
    root, config = matrix_run
    for name, dataset in config["datasets"].items():
        results = root / "results" / name
        obs = _check_controls(results, config, name)
        _check_models(results, config, name, obs)
        tables = results / "tables"
        if dataset["kind"] == "microscopy":
            micro = dataset["microscopy"]
            for table in ("layer_probe", "label_selectivity", "group_detectability"):
                assert (tables / f"{table}.csv").stat().st_size > 0, (name, table)
            heatmaps = micro.get("heatmaps", {})
            assert (tables / "heatmap_channels.csv").exists() == heatmaps.get("enabled", True)
            enabled = micro.get("cellprofiler", {}).get("enabled", True)
            assert (tables / "cp_correlation.csv").exists() == enabled
            assert (tables / "cellprofiler_profiles.csv").exists() == enabled
        enrich = dataset.get("enrich", {})
        # GO enrichment needs genes: scRNA and screens, not `kind: tokens`
        expected = enrich.get("enabled", True) and dataset["kind"] != "tokens"
        assert (tables / "enrichment_labels.csv").exists() == expected
        if dataset["kind"] == "scrna":
            import scanpy as sc

            genes = set(sc.datasets.pbmc68k_reduced().raw.var_names.str.upper())
            _check_gene_set_sizes(results, root / enrich["gene_sets"], genes)
        elif "gene_sets" in enrich:
            _check_gene_set_sizes(results, root / enrich["gene_sets"], set(obs.gene.str.upper()))
        if dataset.get("tokens", {}).get("obs_path"):
            # ids as the user wrote them ('00000', not 0)
            written = pd.read_csv(root / dataset["tokens"]["obs_path"], dtype=str)
            assert obs.token_id.tolist() == written.token_id.tolist()


def test_heatmaps_compare_with_the_controls_the_config_names(matrix_run):
    """Heatmaps of a user store without `is_control`, and of one whose controls are on one
    plate: every other plate's images are compared with the pooled controls, and say so."""
    root, config = matrix_run
    screens = [n for n in ("user_store", "one_plate") if n in config["datasets"]]
    if not screens:
        pytest.skip("no heatmaps in this run")
    for name in screens:
        results = root / "results" / name
        channels = pd.read_csv(results / "tables" / "heatmap_channels.csv", dtype={"label": str})
        selected = pd.read_csv(results / "heatmaps" / "selected.csv", dtype={"label": str})
        store = config["datasets"][name]["microscopy"]["images"]
        images = pd.read_parquet(root / store / "obs.parquet")
        plates = images.plate.to_numpy()[selected.row.to_numpy()]
        control_plates = set(images.plate[images.gene == "non-targeting"])
        expected = [p if p in control_plates else "all plates" for p in plates]
        assert channels.control_reference.tolist() == expected
        assert set(channels.label) <= set(images.gene_group) - {"non-targeting", "no_effect"}
        log = (results / "logs" / "token_heatmaps.log").read_text()
        assert ("plates without control images" in log) == (name == "one_plate")
    assert "all plates" in channels.control_reference.tolist() or name != "one_plate"
