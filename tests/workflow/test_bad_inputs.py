"""Bad input never gives a wrong answer: a catalogue of bad inputs, each run through the real
workflow (Snakemake on a tiny config in a temporary directory).

Every case says what the workflow must do with its input:

1. refuse it (non-zero exit) or accept it and handle it correctly (zero exit, plus a check of
   what it made of the input);
2. say so in a message that names the culprit (the file, config key, column, task or row),
   found in Snakemake's stdout + stderr (the workflow profile prints a failed job's log); for
   accepted inputs the jobs' own logs are searched too, since a successful job's log is not
   printed;
3. at the expected stage: ``config`` (refused while the config is parsed, before any job: no
   results folder at all) or the rule of Snakemake's ``Error in rule <name>:`` line, before
   training (``train_dictionary``) wherever the input allows it;
4. without leaving finished-looking output: no ``headline.csv``, no ``tables/``, no trained
   ``models/*/model.pt`` for a refused dataset, and none of the failed job's outputs.

Cases whose handling is wrong today are marked ``xfail(strict=True)`` with what was seen and
what was expected; remove the mark once the workflow is fixed. docs/bad_inputs.md summarises
the catalogue. Run it with ``python3 -m pytest tests/workflow/test_bad_inputs.py``.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from testkit import TINY_VIT, run_snakemake

pytestmark = pytest.mark.slow

DS = "mine"  # the dataset every case runs, whatever its kind
RESULTS = f"results/{DS}"
N_ROWS = 300
DIM = 8
GUIDES = ["non-targeting", "G1", "G2", "G3"]
VARIANT = "icfl_none_k2_seed0"
MODEL = f"{RESULTS}/models/{VARIANT}/model.pt"
VALIDATION = f"{RESULTS}/validation.json"
TIMEOUT = 300

# A tiny training setup shared by every case.
TRAINING = {
    "whitening": {"methods": ["none"]},
    "dictionary": {
        "methods": ["icfl"],
        "n_features": 16,
        "sparsity": [2],
        "icfl": {"atoms_per_iteration": 2},
        "train": {"steps": 30, "batch_size": 64, "checkpoint_every": 10},
    },
    "evaluate": {"probe": {"max_iter": 50}},
}

# Rules that run before any dictionary is trained; a refused input must stop at one of them
# unless the case says why it cannot (`late`).
BEFORE_TRAINING = (
    "config",
    "import_tokens",
    "embed_scrna",
    "train_expression_model",
    "train_mae",
    "embed_images",
    "choose_layer",
    "validate_dataset",
    "fit_whitening",
    "probe_raw",
    "token_umap",
)


# --------------------------------------------------------------------------- inputs


def token_table(n: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """Embeddings (emb_0..emb_7, one cluster per guide) with obs columns: guide (a quarter
    non-targeting controls), plate (p0..p4, crossed with guide) and cell_type (A/B)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    centres = 2.0 * rng.normal(size=(len(GUIDES), DIM))
    values = centres[rows % len(GUIDES)] + rng.normal(size=(n, DIM))
    table = pd.DataFrame(values.astype(np.float32), columns=[f"emb_{i}" for i in range(DIM)])
    table["guide"] = np.array(GUIDES)[rows % len(GUIDES)]
    table["plate"] = [f"p{i % 5}" for i in rows]
    table["cell_type"] = np.where(rows % 2 == 0, "A", "B")
    return table


def tokens_config(tokens: dict | None = None, **dataset: Any) -> dict:
    """A `kind: tokens` dataset reading emb.parquet (controls: the non-targeting guide, one
    task on guide); ``dataset`` replaces keys of the dataset."""
    section = {
        "kind": "tokens",
        "tokens": {"path": "emb.parquet", "embedding_columns": "emb_", **(tokens or {})},
        "control": {"column": "guide", "values": ["non-targeting"]},
        "tasks": [{"name": "guide", "column": "guide"}],
    }
    section.update(dataset)
    return {"datasets": {DS: section}, **copy.deepcopy(TRAINING)}


def with_table(
    edit: Callable[[pd.DataFrame], pd.DataFrame | None] | None = None,
    *,
    pca: bool = False,
    **config: Any,
):
    """A case input: the token table, edited in place (or replaced) by ``edit``, written as
    emb.parquet; the config is `tokens_config(**config)`, with PCA whitening if ``pca``."""

    def make(workdir: Path) -> dict:
        table = token_table()
        if edit is not None:
            edited = edit(table)
            table = table if edited is None else edited
        table.to_parquet(workdir / "emb.parquet")
        made = tokens_config(**config)
        if pca:
            made["whitening"]["methods"] = ["pca"]
        return made

    return make


def config_only(edit: Callable[[dict], None]):
    """A case input: the good token table, and the config edited by ``edit``."""

    def make(workdir: Path) -> dict:
        token_table().to_parquet(workdir / "emb.parquet")
        config = tokens_config()
        edit(config)
        return config

    return make


def dataset_of(config: dict) -> dict:
    return config["datasets"][DS]


def set_cell(table: pd.DataFrame, row: int, column: str, value: Any) -> None:
    if table[column].dtype != object and not isinstance(value, float):
        table[column] = table[column].astype(object)
    table.loc[row, column] = value


# --------------------------------------------------------------------------- scRNA + gene sets

N_GENES = 40
GENES = [f"GENE{j}" for j in range(N_GENES)]
# Five terms of 12 genes each, all inside the 40-gene background.
TERMS = {f"TERM_{t}": GENES[t * 6 : t * 6 + 12] for t in range(5)}


def gmt_text(terms: dict[str, list[str]] = TERMS, described: bool = True) -> str:
    lines = []
    for term, genes in terms.items():
        fields = [term, "a description"] if described else [term]
        lines.append("\t".join(fields + genes))
    return "\n".join(lines) + "\n"


def scrna_input(
    gmt: str | bytes | None = None,
    *,
    scaled: bool = False,
    enrich: dict | None = None,
) -> Callable[[Path], dict]:
    """A case input: cells.h5ad (300 cells x 40 genes, log1p values in X and .raw, an 8-d
    obsm embedding, 4 cell types) and terms.gmt (``gmt``: text or bytes; None = the good
    five-term file); ``scaled`` puts z-scored (negative) values in X and leaves no .raw."""

    def make(workdir: Path) -> dict:
        import anndata

        rng = np.random.default_rng(1)
        cell_type = np.array(["T", "B", "NK", "mono"])[np.arange(N_ROWS) % 4]
        counts = rng.poisson(2.0, size=(N_ROWS, N_GENES)).astype(np.float32)
        values = np.log1p(counts)
        embedding = token_table()[[f"emb_{i}" for i in range(DIM)]].to_numpy()
        obs = pd.DataFrame({"cell_type": cell_type}, index=[f"cell{i}" for i in range(N_ROWS)])
        var = pd.DataFrame(index=GENES)
        if scaled:
            z = (values - values.mean(0)) / values.std(0)
            adata = anndata.AnnData(X=z.astype(np.float32), obs=obs, var=var)
        else:
            adata = anndata.AnnData(X=values, obs=obs, var=var)
            adata.raw = adata.copy()
        adata.obsm["X_emb"] = embedding
        adata.write_h5ad(workdir / "cells.h5ad")
        content = gmt_text() if gmt is None else gmt
        if isinstance(content, bytes):
            (workdir / "terms.gmt").write_bytes(content)
        else:
            (workdir / "terms.gmt").write_text(content)
        section = {
            "kind": "scrna",
            "scrna": {"source": "cells.h5ad", "embedding": "obsm:X_emb"},
            "control": "all",
            "tasks": [{"name": "cell_type", "column": "cell_type"}],
            "enrich": {"gene_sets": "terms.gmt", "check_lists": 0, **(enrich or {})},
        }
        if scaled:
            section["enrich"]["expression"] = {"matrix": "X"}
        return {"datasets": {DS: section}, **copy.deepcopy(TRAINING)}

    return make


# --------------------------------------------------------------------------- microscopy

ARCHITECTURE = TINY_VIT
N_IMAGES = 48  # 12 per gene: above evaluate.min_label_size


def image_store(n: int = N_IMAGES, shape: tuple[int, ...] = (6, 32, 32)) -> tuple:
    """Images (n, C, H, W) whose brightness depends on the gene, and their obs table
    (image_id, gene, plate)."""
    rng = np.random.default_rng(2)
    rows = np.arange(n)
    gene = np.array(GUIDES)[rows % len(GUIDES)]
    images = rng.uniform(0, 1, size=(n, *shape)).astype(np.float32)
    images += (rows % len(GUIDES)).reshape(-1, *[1] * len(shape)).astype(np.float32)
    obs = pd.DataFrame(
        {"image_id": [f"img{i}" for i in rows], "gene": gene, "plate": [f"p{i % 3}" for i in rows]}
    )
    return images, obs


def microscopy_input(
    edit: Callable[[np.ndarray, pd.DataFrame], tuple | None] | None = None,
    *,
    checkpoint: Callable[[Path], str] | None = None,
    enrich: dict | None = None,
    **model: Any,
) -> Callable[[Path], dict]:
    """A case input: a user image store my_images/ (images.npy + obs.parquet, ``edit``-ed:
    it returns new (images, obs) or edits in place) and a user checkpoint (``checkpoint``
    writes one and returns its path; default: a ViT saved with `checkpoints.save_pretrained`)."""

    def make(workdir: Path) -> dict:
        images, obs = image_store()
        if edit is not None:
            edited = edit(images, obs)
            if edited is not None:
                images, obs = edited
        folder = workdir / "my_images"
        folder.mkdir()
        if isinstance(images, bytes):
            (folder / "images.npy").write_bytes(images)
        elif images is not None:
            np.save(folder / "images.npy", images)
        obs.to_parquet(folder / "obs.parquet")
        path = (checkpoint or save_encoder)(workdir)
        section = {
            "kind": "microscopy",
            "microscopy": {
                "images": "my_images",
                "model": {"checkpoint": path, "architecture": dict(ARCHITECTURE), **model},
                "layer": 1,
                "cellprofiler": {"enabled": False},
                "heatmaps": {"images_per_label": 2},
            },
            "control": {"column": "gene", "values": ["non-targeting"]},
            "tasks": [{"name": "gene_group", "column": "gene"}],
            "enrich": {"enabled": False, **(enrich or {})},
        }
        return {"datasets": {DS: section}, **copy.deepcopy(TRAINING)}

    return make


def save_encoder(workdir: Path, architecture: dict | None = None) -> str:
    import torch

    from cellconcepts.microscopy import checkpoints, vit

    torch.manual_seed(0)
    encoder = vit.ViTEncoder(vit.ViTConfig(**(architecture or ARCHITECTURE)))
    checkpoints.save_pretrained(encoder, workdir / "my_model")
    return "my_model"


# --------------------------------------------------------------------------- checkpoints


def trained_then(damage: Callable[[Path], None]) -> Callable[[Path], dict]:
    """A case input: the good token dataset trained once (model.pt, checkpoints at steps 10,
    20, 30); the model is kept as reference.pt, model.pt deleted so that the case's run
    retrains, and ``damage`` applied to the checkpoint folder (holding last.pt =
    step 30 and last.previous.pt = step 20)."""

    def make(workdir: Path) -> dict:
        token_table().to_parquet(workdir / "emb.parquet")
        config = tokens_config()
        first = run_snakemake(workdir, config, "--cores", "2", MODEL, timeout=TIMEOUT)
        assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
        shutil.move(workdir / MODEL, workdir / "reference.pt")
        (folder,) = (workdir / RESULTS / "checkpoints" / VARIANT).iterdir()
        damage(folder)
        return config

    return make


def same_model_as_reference(workdir: Path) -> None:
    """The retrained model equals the one of the uninterrupted first run, tensor for tensor."""
    import torch

    new = torch.load(workdir / MODEL, weights_only=True)["state_dict"]
    old = torch.load(workdir / "reference.pt", weights_only=True)["state_dict"]
    assert new.keys() == old.keys()
    for key in old:
        torch.testing.assert_close(new[key], old[key], rtol=0, atol=0, msg=key)


def moved_aside(workdir: Path) -> None:
    folder = next((workdir / RESULTS / "checkpoints" / VARIANT).iterdir())
    assert list(folder.glob("last.pt.corrupt-*")), sorted(p.name for p in folder.iterdir())
    assert (folder / "last.pt").is_file()


# --------------------------------------------------------------------------- checks of accepted


def store_obs(workdir: Path) -> pd.DataFrame:
    return pd.read_parquet(workdir / RESULTS / "tokens" / "obs.parquet")


def controls_are(expected: Callable[[pd.DataFrame], np.ndarray]):
    def check(workdir: Path) -> None:
        table = pd.read_parquet(workdir / "emb.parquet")
        obs = store_obs(workdir)
        assert obs["is_control"].dtype == bool
        assert obs["is_control"].tolist() == list(expected(table))

    return check


def rare_label_left_out(workdir: Path) -> None:
    counts = pd.read_csv(workdir / RESULTS / "tables" / "selectivity_counts.csv")
    assert counts["n_rare_labels"].tolist() == [1] * len(counts), counts
    probing = pd.read_csv(workdir / RESULTS / "tables" / "probing.csv")
    assert (probing.loc[probing["task"] == "guide", "n_rare_labels"] == 1).all(), probing
    best = pd.read_csv(workdir / RESULTS / "tables" / "best_selectivity.csv")
    assert "G_single" not in best.to_string(), best


def whitening_finite(workdir: Path) -> None:
    with np.load(workdir / RESULTS / "whitening" / "pca.npz") as saved:
        for name in saved.files:
            if np.issubdtype(saved[name].dtype, np.number):
                assert np.isfinite(saved[name]).all(), name


def gene_sets_without_descriptions(workdir: Path) -> None:
    report = json.loads((workdir / VALIDATION).read_text())["gene_sets"]
    # Every gene counted: were the description column assumed, each term would lose a gene.
    assert report["terms"] == len(TERMS)
    assert report["terms_tested"] == len(TERMS)
    assert report["background_genes_in_no_term"] == N_GENES - 36


def tokens_finite(workdir: Path) -> None:
    tokens = np.load(workdir / RESULTS / "tokens" / "tokens.npy")
    assert tokens.shape == (N_IMAGES, ARCHITECTURE["embed_dim"])
    assert np.isfinite(tokens).all()


def whitening_drops_dimensions(workdir: Path) -> None:
    """The accepted PCA whitening on 5 controls keeps 4 of the 8 dimensions, as said."""
    whitening_finite(workdir)
    with np.load(workdir / RESULTS / "whitening" / "pca.npz") as saved:
        assert saved["components"].shape == (DIM, 4), saved["components"].shape
    warnings = json.loads((workdir / VALIDATION).read_text())["warnings"]
    assert any("drops the other 4" in w for w in warnings), warnings
    assert not any("unwhitened" in w for w in warnings), warnings


def ids_and_labels_as_written(workdir: Path) -> None:
    """token_id "00000".."00299" and the label "None" kept as the strings they are."""
    obs = store_obs(workdir)
    assert obs["token_id"].tolist() == [f"{i:05d}" for i in range(N_ROWS)]
    assert obs["guide"].value_counts().to_dict() == {
        "non-targeting": 75,
        "G1": 75,
        "G2": 75,
        "None": 75,
    }
    report = json.loads((workdir / VALIDATION).read_text())
    assert report["tasks"][0]["labels"] == 4


def whitespace_twins_warned(workdir: Path) -> None:
    warnings = json.loads((workdir / VALIDATION).read_text())["warnings"]
    assert any("'Mono' and 'Mono '" in w for w in warnings), warnings


def disjoint_gene_sets_kept_whole(workdir: Path) -> None:
    report = json.loads((workdir / VALIDATION).read_text())["gene_sets"]
    # 3 terms of 12 genes: with a description column assumed, each would lose its first gene
    assert report["terms"] == 3 and report["terms_tested"] == 3
    assert report["background_genes_in_no_term"] == N_GENES - 36


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Case:
    """One bad input. ``make`` writes the inputs into the working directory and returns the
    config. ``refused``: a non-zero exit is expected (else zero, and ``check`` looks at what
    was made). ``message``: a regex that must match the output (the culprit named). ``stage``:
    ``config``, the rule of ``Error in rule <name>:``, or None for accepted inputs. ``late``:
    why the input can only be refused after training (empty: before training). ``targets``:
    what to build (default: everything). ``xfail``: why the workflow's handling is wrong."""

    id: str
    category: str
    make: Callable[[Path], dict]
    refused: bool
    message: str
    stage: str | None
    check: Callable[[Path], None] | None = None
    targets: tuple[str, ...] = ()
    late: str = ""
    xfail: str = ""


def refused(id: str, category: str, make, message: str, stage: str, **kw) -> Case:
    return Case(id, category, make, True, message, stage, **kw)


def accepted(id: str, category: str, make, message: str, check, targets=(), **kw) -> Case:
    return Case(id, category, make, False, message, None, check, tuple(targets), **kw)


def _nan_row(table: pd.DataFrame) -> None:
    table.loc[7, "emb_3"] = np.nan


def _inf_row(table: pd.DataFrame) -> None:
    table.loc[11, "emb_0"] = np.inf


def _overflow(table: pd.DataFrame) -> pd.DataFrame:
    table = table.astype({"emb_5": np.float64})
    table.loc[13, "emb_5"] = 1e300  # finite as float64, inf as the store's float32
    return table


def _identical_tokens(table: pd.DataFrame) -> None:
    for i in range(DIM):
        table[f"emb_{i}"] = np.float32(1.0)


def _identical_controls(table: pd.DataFrame) -> None:
    controls = table["guide"] == "non-targeting"
    for i in range(DIM):
        table.loc[controls, f"emb_{i}"] = np.float32(0.5)


def npy_input(array_of: Callable[[pd.DataFrame], np.ndarray], obs: str | None, obs_rows=None):
    """A case input: emb.npy (``array_of`` the token table) with an obs table (obs.csv,
    ``obs_rows`` of it; None: no obs_path)."""

    def make(workdir: Path) -> dict:
        table = token_table()
        np.save(workdir / "emb.npy", array_of(table))
        annotations = table[["guide", "plate", "cell_type"]]
        if obs_rows is not None:
            annotations = annotations.iloc[:obs_rows]
        if obs is not None:
            annotations.to_csv(workdir / obs, index=False)
        return tokens_config({"path": "emb.npy", "embedding_columns": None, "obs_path": obs})

    return make


def parquet_folder(workdir: Path) -> dict:
    """A case input: emb.parquet as a folder of two part files (a partitioned dataset)."""
    table = token_table()
    (workdir / "emb.parquet").mkdir()
    table.iloc[: N_ROWS // 2].to_parquet(workdir / "emb.parquet" / "part-0.parquet")
    table.iloc[N_ROWS // 2 :].to_parquet(workdir / "emb.parquet" / "part-1.parquet")
    return tokens_config()


def embeddings_of(table: pd.DataFrame) -> np.ndarray:
    return table[[f"emb_{i}" for i in range(DIM)]].to_numpy()


def raw_file(name: str, content: bytes, **tokens: Any):
    """A case input: the good token table, and a file ``name`` holding ``content``."""

    def make(workdir: Path) -> dict:
        token_table().to_parquet(workdir / "emb.parquet")
        (workdir / name).write_bytes(content)
        return tokens_config(tokens)

    return make


def h5ad_input(duplicate_names: bool = False, **tokens: Any):
    def make(workdir: Path) -> dict:
        import anndata

        table = token_table()
        names = [f"cell{i}" for i in range(N_ROWS)]
        if duplicate_names:
            names[5] = names[4]
        obs = table[["guide", "plate", "cell_type"]].set_axis(names)
        with warnings.catch_warnings():  # anndata warns of the repeated names, on purpose here
            warnings.simplefilter("ignore", UserWarning)
            adata = anndata.AnnData(X=embeddings_of(table).astype(np.float32), obs=obs)
            adata.write_h5ad(workdir / "emb.h5ad")
        return tokens_config({"path": "emb.h5ad", "embedding_columns": None, **tokens})

    return make


def _labels_one_per_plate(table: pd.DataFrame) -> None:
    # Each guide confined to its own plate: a probe split that keeps plates apart can never
    # test a label it trained on.
    table["plate"] = "plate_" + table["guide"]


def _single_token_label(table: pd.DataFrame) -> None:
    table.loc[5, "guide"] = "G_single"


def _few_controls(table: pd.DataFrame) -> None:
    controls = np.flatnonzero(table["guide"] == "non-targeting")
    table.loc[controls[5:], "guide"] = "G1"


def _bool_words(table: pd.DataFrame) -> None:
    words = np.where(table["guide"] == "non-targeting", "Yes", "no")
    words[::7] = np.where(table["guide"].to_numpy()[::7] == "non-targeting", "YES", "No")
    table["is_control"] = words


def _float_flags(table: pd.DataFrame) -> None:
    table["is_control"] = (table["guide"] == "non-targeting").astype(np.float64)


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a torch checkpoint\n" * 10)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path: Path) -> None:
    import torch

    torch.save({"weights": torch.zeros(3)}, path)


def _timm_weights(workdir: Path, embed_dim: int) -> str:
    """A timm-layout weights file of a ViT with ``embed_dim`` (saved tensors only)."""
    import torch

    from cellconcepts.microscopy import vit

    torch.manual_seed(0)
    encoder = vit.ViTEncoder(vit.ViTConfig(**{**ARCHITECTURE, "embed_dim": embed_dim}))
    torch.save(encoder.state_dict(), workdir / "weights.pth")
    return "weights.pth"


def _corrupt_checkpoint_dir(workdir: Path) -> str:
    save_encoder(workdir)
    (workdir / "my_model" / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    return "my_model"


def _gene_table(images: np.ndarray, obs: pd.DataFrame) -> None:
    obs.rename(columns={"gene": "target"}, inplace=True)


def _split_words(words: list[str]):
    """A split column: ``words[1]`` on every fifth row (row 0 first), ``words[0]`` elsewhere."""

    def edit(table: pd.DataFrame) -> None:
        rows = np.arange(len(table))
        table["split"] = np.where(rows % 5 == 0, words[1], words[0])

    return edit


def obs_csv_as_written(workdir: Path) -> dict:
    """A case input: emb.npy with obs.csv whose token_id is "00000".."00299" and whose guide
    G3 is called "None" (pandas' defaults read 0..299 and a missing value)."""
    table = token_table()
    np.save(workdir / "emb.npy", embeddings_of(table))
    obs = table[["guide", "plate", "cell_type"]].assign(
        token_id=[f"{i:05d}" for i in range(N_ROWS)], guide=table["guide"].replace("G3", "None")
    )
    obs.to_csv(workdir / "obs.csv", index=False)
    return tokens_config({"path": "emb.npy", "embedding_columns": None, "obs_path": "obs.csv"})


def _mono_with_spaces(table: pd.DataFrame) -> None:
    rows = np.arange(len(table))
    table["cell_type"] = np.where(rows % 2 == 0, "Mono", "T")
    table.loc[rows % 4 == 0, "cell_type"] = "Mono "  # a space after half of the Mono rows


def duplicate_dataset_key(workdir: Path) -> str:
    """A case input: a config file (YAML text) that gives the dataset `mine` twice: YAML keeps
    the second, the first is silently lost."""
    token_table().to_parquet(workdir / "emb.parquet")
    (workdir / "other.parquet").write_bytes((workdir / "emb.parquet").read_bytes())
    first = tokens_config()
    second = tokens_config({"path": "other.parquet"})
    first_text = yaml.safe_dump({"datasets": first["datasets"]}, sort_keys=False)
    second_text = yaml.safe_dump(second["datasets"], sort_keys=False)
    rest = yaml.safe_dump({k: v for k, v in first.items() if k != "datasets"}, sort_keys=False)
    return first_text + "".join(f"  {line}\n" for line in second_text.splitlines()) + rest


def load_data_screen(channels: list[str]):
    """A case input: a screen in its microscope layout, screen/load_data.csv listing one 16-bit
    TIFF per channel of 48 images (``channels``), and the user's 6-channel ViT checkpoint."""

    def make(workdir: Path) -> dict:
        import tifffile

        images, obs = image_store()
        rows = []
        for i, image in enumerate(images):
            row = {"Metadata_image_id": obs.image_id[i], "Metadata_gene": obs.gene[i]}
            row["Metadata_plate"] = obs.plate[i]
            folder = workdir / "screen" / obs.plate[i]
            folder.mkdir(parents=True, exist_ok=True)
            for channel, plane in zip(channels, image, strict=False):
                name = f"{obs.image_id[i]}_{channel}.tif"
                tifffile.imwrite(folder / name, (plane * 10000).astype(np.uint16))
                row |= {f"FileName_{channel}": name, f"PathName_{channel}": obs.plate[i]}
            rows.append(row)
        pd.DataFrame(rows).to_csv(workdir / "screen" / "load_data.csv", index=False)
        config = microscopy_input()(workdir)
        section = dataset_of(config)["microscopy"]
        section["images"] = {"load_data": "screen/load_data.csv", "channels": channels}
        return config

    return make


def with_microscopy(make: Callable[[Path], dict], **keys: Any) -> Callable[[Path], dict]:
    """A microscopy case input with keys of its `microscopy` section replaced."""

    def edited(workdir: Path) -> dict:
        config = make(workdir)
        dataset_of(config)["microscopy"].update(keys)
        return config

    return edited


def with_whitening(make: Callable[[Path], dict], **keys: Any) -> Callable[[Path], dict]:
    """A case input with keys of the `whitening` section replaced."""

    def edited(workdir: Path) -> dict:
        config = make(workdir)
        config["whitening"].update(keys)
        return config

    return edited


CASES: list[Case] = [
    # ------------------------------------------------------------------ config
    refused(
        "config-unknown-top-level-key",
        "config",
        config_only(lambda c: c.update(dictionry={"n_features": 16})),
        r"'dictionry' was unexpected",
        "config",
    ),
    refused(
        "config-unknown-kind",
        "config",
        config_only(lambda c: dataset_of(c).update(kind="embeddings")),
        r"'embeddings' is not one of \[.*\][\s\S]*On instance\['datasets'\]\['mine'\]\['kind'\]",
        "config",
    ),
    refused(
        "config-dataset-name-with-hyphen",
        "config",
        config_only(lambda c: c.update(datasets={"my-data": dataset_of(c)})),
        r"'my-data' does not match '\^\[A-Za-z0-9_\]\+\$'",
        "config",
    ),
    refused(
        "config-missing-tokens-file",
        "config",
        config_only(lambda c: dataset_of(c)["tokens"].update(path="missing.parquet")),
        r"datasets\.mine\.tokens\.path: input file 'missing\.parquet' does not exist",
        "config",
    ),
    refused(
        "config-kind-section-missing",
        "config",
        config_only(lambda c: dataset_of(c).pop("tokens")),
        r"datasets\.mine: kind is 'tokens' but the section datasets\.mine\.tokens is missing",
        "config",
    ),
    refused(
        "config-task-without-column",
        "config",
        config_only(lambda c: dataset_of(c)["tasks"][0].pop("column")),
        r"'column' is a required property[\s\S]*instance\['datasets'\]\['mine'\]\['tasks'\]\[0\]",
        "config",
    ),
    refused(
        "config-duplicate-task-names",
        "config",
        config_only(lambda c: dataset_of(c)["tasks"].append({"name": "guide", "column": "plate"})),
        r"datasets\.mine\.tasks: task names must be unique, repeated: \['guide'\]",
        "config",
    ),
    refused(
        "config-test-fraction-out-of-range",
        "config",
        config_only(lambda c: dataset_of(c).update(split={"test_fraction": 1.5})),
        r"1\.5 is greater than or equal to the maximum of 1[\s\S]*"
        r"On instance\['datasets'\]\['mine'\]\['split'\]\['test_fraction'\]",
        "config",
    ),
    refused(
        "config-string-for-integer",
        "config",
        config_only(lambda c: c["dictionary"].update(n_features="16")),
        r"'16' is not of type 'integer'[\s\S]*instance\['dictionary'\]\['n_features'\]",
        "config",
    ),
    refused(
        "config-sparsity-not-multiple-of-L",
        "config",
        config_only(lambda c: c["dictionary"].update(sparsity=[3])),
        r"datasets\.mine: dictionary\.sparsity 3 is not a multiple of "
        r"dictionary\.icfl\.atoms_per_iteration 2",
        "config",
    ),
    refused(
        "config-sparsity-above-n-features",
        "config",
        config_only(lambda c: c["dictionary"].update(n_features=4, sparsity=[8])),
        r"datasets\.mine: dictionary\.sparsity 8 is not below dictionary\.n_features 4",
        "config",
    ),
    refused(
        # As many non-zeros as features: the headline said 4, ICFL's codes had 2.56 on average.
        "config-sparsity-equal-to-n-features",
        "config",
        config_only(lambda c: c["dictionary"].update(n_features=4, sparsity=[4])),
        r"datasets\.mine: dictionary\.sparsity 4 is not below dictionary\.n_features 4",
        "config",
    ),
    refused(
        # 16 non-zeros for 8-dimensional tokens: the headline said 16, the codes had 11.8
        # (ICFL) and 14.5 (TopK), and ICFL's reconstruction was trivially 0.999.
        "config-sparsity-above-dimension",
        "config",
        config_only(lambda c: c["dictionary"].update(n_features=32, sparsity=[16])),
        r"datasets\.mine: dictionary\.sparsity 16 exceeds the embedding dimension 8",
        "config",
    ),
    refused(
        # YAML keeps the second `mine:` and silently drops the first.
        "config-dataset-key-given-twice",
        "config",
        duplicate_dataset_key,
        r"user\.yaml, line \d+: key 'mine' of datasets is given twice \(first on line 2\)",
        "config",
    ),
    refused(
        "config-empty-input-file",
        "config",
        raw_file("emb.npy", b"", path="emb.npy", embedding_columns=None, obs_path="obs.csv"),
        r"datasets\.mine\.tokens\.path: 'emb\.npy' is empty \(0 bytes\)",
        "config",
    ),
    refused(
        "config-bad-per-dataset-override",
        "config",
        config_only(lambda c: dataset_of(c).update(dictionary={"train": {"steps": 0}})),
        r"datasets\.mine\.dictionary\.train\.steps: 0 is less than the minimum of 1",
        "config",
    ),
    refused(
        "config-n-components-above-dimension",
        "config",
        config_only(lambda c: c["whitening"].update(methods=["pca"], n_components=20)),
        r"whitening\.n_components: 20 components, but dataset 'mine' has 8-dimensional",
        "config",
    ),
    # ------------------------------------------------------------------ tokens
    refused(
        "tokens-nan",
        "tokens",
        with_table(_nan_row),
        r"emb\.parquet: row 7, column 'emb_3': NaN",
        "import_tokens",
    ),
    refused(
        "tokens-inf",
        "tokens",
        with_table(_inf_row),
        r"emb\.parquet: row 11, column 'emb_0': inf",
        "import_tokens",
    ),
    refused(
        "tokens-overflow-float32",
        "tokens",
        with_table(_overflow),
        r"emb\.parquet: row 13, column 'emb_5': inf as float32 \(beyond its range",
        "import_tokens",
    ),
    refused(
        # Every token the same vector (a broken export): nothing can be learned, and every
        # whitened token is a zero vector. validate_dataset sees it (it reads every token).
        "tokens-all-identical",
        "tokens",
        with_table(_identical_tokens),
        r"(emb\.parquet|tokens\.npy).*(identical|no variance|constant)",
        "validate_dataset",
    ),
    refused(
        # A repeated name would silently give the store a duplicated dimension.
        "tokens-embedding-columns-repeated",
        "tokens",
        with_table(tokens={"embedding_columns": ["emb_0", "emb_0", "emb_1", "emb_2"]}),
        r"embedding_columns.*'emb_0'",
        "config",
    ),
    refused(
        # A partitioned Parquet dataset (a folder, as Spark writes it) instead of one file.
        "tokens-parquet-folder",
        "tokens",
        parquet_folder,
        r"\bemb\.parquet\b",
        "import_tokens",
    ),
    refused(
        "tokens-prefix-matches-no-column",
        "tokens",
        with_table(tokens={"embedding_columns": "x_"}),
        r"datasets\.mine\.tokens\.embedding_columns: 'x_' match no column of 'emb\.parquet'; "
        r"columns: \['emb_0'",
        "config",
    ),
    refused(
        "tokens-column-not-numeric",
        "tokens",
        with_table(tokens={"embedding_columns": ["emb_0", "emb_1", "guide"]}),
        r"emb\.parquet: embedding columns \['guide'\] are not numbers",
        "import_tokens",
    ),
    refused(
        "tokens-corrupt-parquet",
        "tokens",
        raw_file("bad.parquet", b"PAR1 not really parquet", path="bad.parquet"),
        r"datasets\.mine\.tokens\.path: cannot read 'bad\.parquet' as a Parquet table",
        "config",
    ),
    refused(
        "tokens-empty-parquet",
        "tokens",
        with_table(lambda t: t.iloc[:0]),
        r"emb\.parquet.*no rows|no rows.*emb\.parquet",
        "import_tokens",
    ),
    refused(
        "tokens-npy-without-obs-path",
        "tokens",
        npy_input(embeddings_of, obs=None),
        r"emb\.npy: an \.npy embedding needs obs_path",
        "import_tokens",
    ),
    refused(
        "tokens-npy-3d",
        "tokens",
        npy_input(lambda t: embeddings_of(t).reshape(N_ROWS, 2, 4), obs="obs.csv"),
        r"emb\.npy: expected a 2-D embedding matrix, got shape \(300, 2, 4\)",
        "import_tokens",
    ),
    refused(
        "tokens-unsupported-format",
        "tokens",
        raw_file("emb.tsv", b"1\t2\n", path="emb.tsv"),
        r"emb\.tsv: unsupported embedding format '\.tsv'",
        "import_tokens",
    ),
    refused(
        "tokens-h5ad-missing-obsm-key",
        "tokens",
        h5ad_input(obsm_key="X_scvi"),
        r"emb\.h5ad: obsm key 'X_scvi' not found",
        "import_tokens",
    ),
    # ------------------------------------------------------------------ obs
    refused(
        "obs-rows-mismatch",
        "obs",
        npy_input(embeddings_of, obs="obs.csv", obs_rows=N_ROWS - 1),
        r"obs\.csv: obs has 299 rows but the embeddings in \S*emb\.npy have 300 rows",
        "import_tokens",
    ),
    refused(
        "obs-csv-not-utf8",
        "obs",
        raw_file(
            "obs.csv",
            b"guide,plate\n" + "caf\u00e9,p0\n".encode("latin-1") * N_ROWS,
            path="emb.parquet",
            obs_path="obs.csv",
        ),
        r"obs\.csv: cannot read it as a UTF-8 CSV table",
        "import_tokens",
    ),
    refused(
        "obs-wrong-suffix",
        "obs",
        raw_file("obs.tsv", b"guide\tplate\n", obs_path="obs.tsv"),
        r"obs\.tsv: obs file must be \.parquet or \.csv",
        "import_tokens",
    ),
    refused(
        "obs-duplicate-token-id",
        "obs",
        with_table(lambda t: t.assign(token_id=[f"t{i // 2}" for i in range(N_ROWS)])),
        r"emb\.parquet: column 'token_id' must be unique \(one token per id\): 't0' is on "
        r"rows \[0, 1\]",
        "import_tokens",
    ),
    refused(
        "obs-missing-token-id",
        "obs",
        with_table(
            lambda t: t.assign(token_id=[None if i == 3 else f"t{i}" for i in range(N_ROWS)])
        ),
        r"emb\.parquet: column 'token_id' has a missing value at row 3",
        "import_tokens",
    ),
    refused(
        "obs-h5ad-duplicate-cell-names",
        "obs",
        h5ad_input(duplicate_names=True),
        r"emb\.h5ad: the row names \(obs index, read as token_id\) must be unique.*'cell4' is "
        r"on rows \[4, 5\]",
        "import_tokens",
    ),
    accepted(
        # pandas' defaults made 0..299 of the ids and a missing value of the label "None": a
        # quarter of the rows and the label vanished from the task.
        "obs-csv-ids-and-labels-as-written",
        "obs",
        obs_csv_as_written,
        r"obs\.csv: 300 rows, every cell read as written",
        ids_and_labels_as_written,
        targets=[VALIDATION],
    ),
    # ------------------------------------------------------------------ labels / tasks
    refused(
        "labels-column-missing",
        "labels",
        config_only(lambda c: dataset_of(c)["tasks"][0].update(column="perturbation")),
        r"task label columns \['perturbation'\] are not in obs",
        "import_tokens",
    ),
    refused(
        "labels-single-label",
        "labels",
        with_table(
            lambda t: t.assign(cell_type="A"), tasks=[{"name": "ct", "column": "cell_type"}]
        ),
        r"task 'ct' \(column 'cell_type'\) has 1 label\(s\) with at least 10 tokens",
        "validate_dataset",
    ),
    refused(
        "labels-all-but-one-rare",
        "labels",
        with_table(
            lambda t: t.assign(cell_type=["A"] * (N_ROWS - 9) + [f"r{i}" for i in range(9)]),
            tasks=[{"name": "ct", "column": "cell_type"}],
        ),
        r"task 'ct' \(column 'cell_type'\) has 1 label\(s\) with at least 10 tokens",
        "validate_dataset",
    ),
    refused(
        "labels-all-excluded",
        "labels",
        with_table(tasks=[{"name": "guide", "column": "guide", "exclude": GUIDES}]),
        r"task 'guide' \(column 'guide'\) has 0 label\(s\)",
        "validate_dataset",
    ),
    refused(
        "labels-all-missing",
        "labels",
        with_table(
            lambda t: t.assign(cell_type=None), tasks=[{"name": "ct", "column": "cell_type"}]
        ),
        r"task 'ct' \(column 'cell_type'\) has 0 label\(s\)",
        "validate_dataset",
    ),
    refused(
        "labels-group-by-column-missing",
        "labels",
        with_table(tasks=[{"name": "guide", "column": "guide", "group_by": "batch"}]),
        r"task 'guide' keeps groups of column 'batch' apart \(tasks\[\]\.group_by\), which is "
        r"not there",
        "validate_dataset",
    ),
    refused(
        "labels-group-by-single-value",
        "labels",
        with_table(
            lambda t: t.assign(batch="b0"),
            tasks=[{"name": "guide", "column": "guide", "group_by": "batch"}],
        ),
        r"task 'guide' keeps groups of column 'batch' apart, but its labelled rows have 1 value",
        "validate_dataset",
    ),
    refused(
        "labels-confounded-with-groups",
        "labels",
        with_table(
            _labels_one_per_plate,
            tasks=[{"name": "guide", "column": "guide", "group_by": "plate"}],
        ),
        r"task 'guide'.*'plate'",
        "validate_dataset",
    ),
    refused(
        # enrich.labels names labels of enrich.label_task (default: the first task); the token
        # store says which exist, so validate_dataset can check them.
        "labels-enrich-labels-typo",
        "labels",
        scrna_input(enrich={"labels": ["T", "Bcell"]}),
        r"enrich\.labels: \['Bcell'\] (are|is) not (a )?labels? of task 'cell_type'",
        "validate_dataset",
    ),
    refused(
        # A typo of a real label: nothing was excluded, without a word.
        "labels-exclude-typo",
        "labels",
        with_table(tasks=[{"name": "guide", "column": "guide", "exclude": ["non-targetting"]}]),
        r"emb\.parquet \(token store \S+\): task 'guide' excludes 'non-targetting' "
        r"\(tasks\[\]\.exclude\), which is not a label of column 'guide'.*nearest label: "
        r"'non-targeting'",
        "validate_dataset",
    ),
    accepted(
        # "Mono" and "Mono " used to be two labels without a word.
        "labels-differing-only-in-whitespace-warned",
        "labels",
        with_table(_mono_with_spaces, tasks=[{"name": "ct", "column": "cell_type"}]),
        r"validate_dataset \(mine\): emb\.parquet \(token store \S+\): task 'ct' \(column "
        r"'cell_type'\): 1 label\(s\) differ only in surrounding whitespace.*'Mono' and 'Mono '",
        whitespace_twins_warned,
        targets=[VALIDATION],
    ),
    accepted(
        "labels-single-token-label-left-out",
        "labels",
        with_table(_single_token_label),
        r"task 'guide': labels with fewer than 10 tokens are left out of selectivity and "
        r"probing: \{'G_single': 1\}",
        rare_label_left_out,
    ),
    # ------------------------------------------------------------------ splits
    refused(
        "split-capitalised",
        "splits",
        with_table(_split_words(["Train", "Test"])),
        r"column 'split': expected 'train' or 'test'; row 0 has 'Test'.*lower-case them",
        "import_tokens",
    ),
    refused(
        "split-unknown-value",
        "splits",
        with_table(_split_words(["train", "validation"])),
        r"column 'split': expected 'train' or 'test'; row 0 has 'validation'",
        "import_tokens",
    ),
    refused(
        "split-missing-value",
        "splits",
        with_table(
            lambda t: t.assign(
                split=[None if i == 4 else "train" if i % 5 else "test" for i in range(N_ROWS)]
            )
        ),
        r"column 'split': expected 'train' or 'test'; row 4 has None",
        "import_tokens",
    ),
    refused(
        "split-no-test-rows",
        "splits",
        with_table(lambda t: t.assign(split="train")),
        r"split: 0 of 300 rows are 'test'",
        "import_tokens",
    ),
    refused(
        "split-test-fraction-rounds-to-zero",
        "splits",
        with_table(split={"test_fraction": 0.001}),
        r"split: 0 of 300 rows are 'test'.*split\.test_fraction",
        "import_tokens",
    ),
    refused(
        "split-group-by-column-missing",
        "splits",
        with_table(split={"group_by": "batch"}),
        r"split\.group_by 'batch' is not an obs column",
        "import_tokens",
    ),
    refused(
        "split-group-by-single-group",
        "splits",
        with_table(lambda t: t.assign(batch="b0"), split={"group_by": "batch"}),
        r"split: 0 of 300 rows are 'test'.*split\.group_by",
        "import_tokens",
    ),
    # ------------------------------------------------------------------ controls
    refused(
        "controls-no-is-control-column",
        "controls",
        with_table(control=None),
        r"no is_control column: set the dataset's `control` key",
        "import_tokens",
    ),
    refused(
        "controls-column-missing",
        "controls",
        with_table(control={"column": "guide_name", "values": ["non-targeting"]}),
        r"control\.column 'guide_name' is not an obs column",
        "import_tokens",
    ),
    refused(
        "controls-value-typo",
        "controls",
        with_table(control={"column": "guide", "values": ["non-targetting"]}),
        r"control: only 0 rows have guide in \['non-targetting'\]",
        "import_tokens",
    ),
    refused(
        "controls-single-row",
        "controls",
        with_table(
            lambda t: set_cell(t, 9, "guide", "NT"), control={"column": "guide", "values": ["NT"]}
        ),
        r"control: only 1 rows have guide in \['NT'\]",
        "import_tokens",
    ),
    refused(
        "controls-flags-unknown-words",
        "controls",
        with_table(
            lambda t: t.assign(is_control=np.where(t.guide == "non-targeting", "Y", "N")),
            control=None,
        ),
        r"column 'is_control': expected booleans.*found 'N', 'Y'",
        "import_tokens",
    ),
    refused(
        "controls-flags-missing-value",
        "controls",
        with_table(
            lambda t: t.assign(is_control=[None if i == 2 else i % 4 == 0 for i in range(N_ROWS)]),
            control=None,
        ),
        r"column 'is_control': expected booleans.*None",
        "import_tokens",
    ),
    refused(
        "controls-flags-not-0-1",
        "controls",
        with_table(lambda t: t.assign(is_control=np.arange(N_ROWS) % 3), control=None),
        r"column 'is_control': expected booleans.*found .*2",
        "import_tokens",
    ),
    refused(
        # One point: the control covariance is zero, every whitened token divides by ~eps.
        "controls-all-identical",
        "controls",
        with_table(_identical_controls, pca=True),
        r"the 75 control rows are identical; cannot fit pca whitening",
        "fit_whitening",
    ),
    accepted(
        "controls-flags-yes-no-words",
        "controls",
        with_table(_bool_words, control=None),
        r"using the input's own is_control column",
        controls_are(lambda t: t["is_control"].str.lower() == "yes"),
        targets=[VALIDATION],
    ),
    accepted(
        "controls-flags-float-0-1",
        "controls",
        with_table(_float_flags, control=None),
        r"using the input's own is_control column",
        controls_are(lambda t: t["is_control"] == 1.0),
        targets=[VALIDATION],
    ),
    refused(
        # 2-5 controls for 8 dimensions: the whitening kept 1-4 of 8 dimensions, the headline's
        # reconstruction was near 1 on what was kept, and the end-of-run message said the
        # rest were "left unwhitened" (they were dropped).
        "controls-fewer-than-dimensions",
        "controls",
        with_table(_few_controls, pca=True),
        r"emb\.parquet \(token store \S+\): 5 control rows for 8-dimensional tokens: the PCA "
        r"whitening fitted on them keeps at most 4 of the 8 dimensions and drops the other 4"
        r".*whitening\.allow_dropped_dimensions: true",
        "validate_dataset",
    ),
    accepted(
        "controls-fewer-than-dimensions-accepted",
        "controls",
        with_whitening(with_table(_few_controls, pca=True), allow_dropped_dimensions=True),
        r"validate_dataset \(mine\): emb\.parquet \(token store \S+\): 5 control rows for "
        r"8-dimensional tokens: the PCA whitening fitted on them keeps at most 4 of the 8 "
        r"dimensions and drops the other 4 .*accepted by whitening\.allow_dropped_dimensions",
        whitening_drops_dimensions,
        targets=[f"{RESULTS}/whitening/pca.npz"],
    ),
    # ------------------------------------------------------------------ images
    refused(
        "images-npy-missing",
        "images",
        microscopy_input(lambda images, obs: (None, obs)),
        r"datasets\.mine\.microscopy\.images: .*'my_images' has no images\.npy",
        "config",
    ),
    refused(
        "images-no-image-id",
        "images",
        microscopy_input(lambda images, obs: obs.rename(columns={"image_id": "id"}, inplace=True)),
        r"obs\.parquet: expected an 'image_id' column",
        "embed_images",
    ),
    refused(
        "images-duplicate-image-id",
        "images",
        microscopy_input(lambda images, obs: set_cell(obs, 3, "image_id", "img2")),
        r"obs\.parquet: image_id must be unique; repeated: \['img2'\]",
        "embed_images",
    ),
    refused(
        "images-obs-rows-mismatch",
        "images",
        microscopy_input(lambda images, obs: (images, obs.iloc[:40])),
        r"obs\.parquet: 40 rows but \S*images\.npy holds 48 images",
        "embed_images",
    ),
    refused(
        "images-not-4d",
        "images",
        microscopy_input(lambda images, obs: (images[:, 0], obs)),
        r"images\.npy: expected shape \(n, C, H, W\), got \(48, 32, 32\)",
        "config",
    ),
    refused(
        "images-wrong-channels",
        "images",
        microscopy_input(lambda images, obs: (images[:, :5], obs)),
        r"my_images/images\.npy: images are 5x32x32 but the model expects 6x32x32 \(my_model/"
        r"config\.json: in_chans, img_size\)",
        "config",
    ),
    refused(
        "images-wrong-size",
        "images",
        microscopy_input(lambda images, obs: (np.tile(images, (1, 1, 2, 2)), obs)),
        r"my_images/images\.npy: images are 6x64x64 but the model expects 6x32x32",
        "config",
    ),
    refused(
        "images-nan-pixels",
        "images",
        microscopy_input(lambda images, obs: images.__setitem__((6, 2, 3, 4), np.nan)),
        r"images\.npy: image 6 holds NaN or infinite pixels",
        "embed_images",
    ),
    refused(
        "images-corrupt-npy",
        "images",
        microscopy_input(lambda images, obs: (b"not an npy file", obs)),
        r"datasets\.mine\.microscopy\.images: \S*my_images/images\.npy: not a readable \.npy",
        "config",
    ),
    refused(
        "images-gene-column-missing",
        "images",
        microscopy_input(_gene_table, enrich={"enabled": True}),
        r"datasets\.mine\.enrich\.screen\.gene_column: 'gene' is not a column of",
        "config",
    ),
    refused(
        # Used to be refused only when the encoder met the imported images, naming the store.
        "images-load-data-channels-fewer-than-model",
        "images",
        load_data_screen(["DNA", "ER", "RNA", "AGP", "Mito"]),
        r"datasets\.mine\.microscopy\.images\.channels: 5 channels .* but the model takes 6 "
        r"\(my_model/config\.json",
        "config",
    ),
    refused(
        # Used to fail in feature_browser with an IndexError, after training.
        "images-browser-rgb-channel-out-of-range",
        "images",
        with_microscopy(microscopy_input(), browser_rgb=[0, 1, 7]),
        r"datasets\.mine\.microscopy\.browser_rgb: \[0, 1, 7\] names channel 7, but the images "
        r"have 6 channels",
        "config",
    ),
    accepted(
        "images-blank-images-embedded",
        "images",
        microscopy_input(lambda images, obs: images.__setitem__(slice(0, 8), 0.0)),
        r"embedded 48 images at layers \[1\]",
        tokens_finite,
        targets=[VALIDATION],
    ),
    # ------------------------------------------------------------------ gene sets
    refused(
        "genesets-file-missing",
        "gene sets",
        scrna_input(enrich={"gene_sets": "missing.gmt"}),
        r"datasets\.mine\.enrich\.gene_sets: 'missing\.gmt' is neither",
        "config",
    ),
    refused(
        "genesets-term-sizes-inverted",
        "gene sets",
        scrna_input(enrich={"min_term_size": 50, "max_term_size": 20}),
        r"datasets\.mine\.enrich: min_term_size 50 exceeds max_term_size 20",
        "config",
    ),
    refused(
        "genesets-binary-file",
        "gene sets",
        scrna_input(b"\x1f\x8b\x08\x00" + bytes(range(256))),
        r"terms\.gmt: a binary file, not a gene-set library",
        "validate_dataset",
    ),
    refused(
        "genesets-not-utf8",
        "gene sets",
        scrna_input(gmt_text().encode() + "TERM_X\tcaf\u00e9\tGENE1\n".encode("latin-1")),
        r"terms\.gmt, line 6: not UTF-8 text",
        "validate_dataset",
    ),
    refused(
        "genesets-empty-file",
        "gene sets",
        scrna_input("\n\n"),
        r"terms\.gmt: no gene sets found \(the file is empty\)",
        "validate_dataset",
    ),
    refused(
        "genesets-duplicate-term",
        "gene sets",
        scrna_input(gmt_text() + gmt_text({"TERM_0": GENES[:12]})),
        r"terms\.gmt, line 6: duplicate term 'TERM_0'",
        "validate_dataset",
    ),
    refused(
        "genesets-no-overlap-with-background",
        "gene sets",
        scrna_input(gmt_text({f"MOUSE_{t}": [f"Mgene{j}" for j in range(12)] for t in range(3)})),
        r"terms\.gmt over the background of \S+: no gene set has between 10 and 500",
        "validate_dataset",
    ),
    refused(
        "genesets-expression-scaled",
        "gene sets",
        scrna_input(scaled=True),
        r"cells\.h5ad \(enrich\.expression\.matrix: X\): values go down to",
        "validate_dataset",
    ),
    accepted(
        "genesets-without-description-column",
        "gene sets",
        scrna_input(gmt_text(described=False)),
        r"terms\.gmt: 5 terms, detected WITHOUT a description field",
        gene_sets_without_descriptions,
        targets=[VALIDATION],
    ),
    accepted(
        # Terms that share no gene: the first gene of each was taken for a description.
        "genesets-disjoint-terms-without-description-column",
        "gene sets",
        scrna_input(
            gmt_text({f"TERM_{t}": GENES[t * 12 : t * 12 + 12] for t in range(3)}, described=False)
        ),
        r"terms\.gmt: 3 terms, detected WITHOUT a description field",
        disjoint_gene_sets_kept_whole,
        targets=[VALIDATION],
    ),
    # ------------------------------------------------------------------ checkpoints
    accepted(
        "checkpoint-corrupt-last-resumes-from-previous",
        "checkpoints",
        trained_then(lambda folder: _corrupt(folder / "last.pt")),
        r"last\.pt: not a readable checkpoint of this workflow .*moved to \S*last\.pt\.corrupt-"
        r"[\s\S]*resuming from the previous checkpoint \S*last\.previous\.pt",
        lambda wd: (moved_aside(wd), same_model_as_reference(wd)),
        targets=[MODEL],
    ),
    accepted(
        "checkpoint-truncated-no-previous-starts-over",
        "checkpoints",
        trained_then(
            lambda folder: (_truncate(folder / "last.pt"), (folder / "last.previous.pt").unlink())
        ),
        r"last\.pt: not a readable checkpoint of this workflow .*moved to \S*last\.pt\.corrupt-",
        lambda wd: (moved_aside(wd), same_model_as_reference(wd)),
        targets=[MODEL],
    ),
    accepted(
        "checkpoint-foreign-file",
        "checkpoints",
        trained_then(
            lambda folder: (_foreign(folder / "last.pt"), (folder / "last.previous.pt").unlink())
        ),
        r"last\.pt: not a readable checkpoint of this workflow \(ValueError\)",
        lambda wd: (moved_aside(wd), same_model_as_reference(wd)),
        targets=[MODEL],
    ),
    refused(
        "checkpoint-user-vit-missing",
        "checkpoints",
        microscopy_input(checkpoint=lambda wd: "no_such_model"),
        r"datasets\.mine\.microscopy\.model\.checkpoint: 'no_such_model' does not exist",
        "config",
    ),
    refused(
        "checkpoint-user-vit-no-input-norm",
        "checkpoints",
        microscopy_input(checkpoint=lambda wd: _timm_weights(wd, 32)),
        r"datasets\.mine\.microscopy\.model\.architecture\.input_norm: say how 'weights\.pth'",
        "config",
    ),
    refused(
        "checkpoint-user-vit-corrupt",
        "checkpoints",
        microscopy_input(checkpoint=_corrupt_checkpoint_dir),
        r"model\.safetensors: cannot read weights safely",
        "embed_images",
    ),
    refused(
        "checkpoint-user-vit-wrong-architecture",
        "checkpoints",
        microscopy_input(
            checkpoint=lambda wd: _timm_weights(wd, 64),
            architecture={**ARCHITECTURE, "input_norm": "standardize"},
        ),
        r"weights\.pth: weights do not match the encoder architecture.*shape mismatches",
        "embed_images",
    ),
]


# --------------------------------------------------------------------------- the test

_JOB_FIELDS = re.compile(
    r"^\s+(input|output|log|benchmark|wildcards|reason|jobid|resources|threads|message|"
    r"conda-env|shell|priority)\b.*$"
)


def messages(output: str) -> str:
    """The output without what would match any file name whatever the message says: the
    input/output/log lines Snakemake prints per job, traceback frames, and the schema and
    config dumps of a schema error (the "On instance[...]" line, which names the key, stays).
    """
    kept, dump = [], False
    for line in output.splitlines():
        if dump and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        dump = False
        if line.startswith("Failed validating") or line.startswith("On instance"):
            kept.append(line)
            dump = True
            continue
        if _JOB_FIELDS.match(line) or line.lstrip().startswith('File "'):
            continue
        kept.append(line)
    return "\n".join(kept)


def failed_rules(output: str) -> list[str]:
    return re.findall(r"^Error in rule (\w+):", output, flags=re.MULTILINE)


def failed_outputs(output: str) -> list[str]:
    """The declared outputs of the failed jobs (Snakemake's ``Error in rule`` blocks)."""
    paths = []
    for block in re.findall(r"^Error in rule \w+:\n((?:    .*\n)+)", output, flags=re.MULTILINE):
        for line in block.splitlines():
            if line.strip().startswith("output:"):
                paths += [p.strip() for p in line.split(":", 1)[1].split(",")]
    return paths


def job_logs(workdir: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(workdir.glob("results/*/logs/*"))
    )


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


CATEGORIES = (
    "config",
    "tokens",
    "obs",
    "labels",
    "splits",
    "controls",
    "images",
    "gene sets",
    "checkpoints",
)
DOC = Path(__file__).resolve().parents[2] / "docs" / "bad_inputs.md"
COMMAND = "PYTHONPATH=tests/support python tests/workflow/test_bad_inputs.py"
DOC_BEGIN = f"<!-- begin: generated by `{COMMAND}` from CASES -->"
DOC_END = "<!-- end: generated -->"


def outcome(case: Case) -> str:
    """What the workflow does with a case's input: refused at parse, before or after training,
    or accepted and handled correctly."""
    if not case.refused:
        return "accepted"
    if case.stage == "config":
        return "parse"
    return "after training" if case.late else "before training"


def catalogue_summary() -> str:
    """The generated part of docs/bad_inputs.md: totals, a table per category, every case."""
    kinds = ("parse", "before training", "after training", "accepted")
    total = {k: sum(outcome(c) == k for c in CASES) for k in kinds}
    wrong = sum(bool(c.xfail) for c in CASES)
    lines = [
        f"{len(CASES)} cases: {total['parse']} refused while the config is parsed, "
        f"{total['before training']} refused by a job before training, "
        f"{total['after training']} refused after training, {total['accepted']} accepted and "
        f"handled correctly; {wrong} handled wrongly today (`xfail`).",
        "",
        "| category | cases | refused at parse | refused before training | refused after training "
        "| accepted | wrong today | stages that refuse |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for category in CATEGORIES:
        cases = [c for c in CASES if c.category == category]
        counts = [sum(outcome(c) == k for c in cases) for k in kinds]
        order = [
            *BEFORE_TRAINING,
            *sorted({c.stage for c in CASES} - set(BEFORE_TRAINING) - {None}),
        ]
        stages = sorted({c.stage for c in cases if c.stage}, key=order.index)
        lines.append(
            f"| {category} | {len(cases)} | "
            + " | ".join(str(n) for n in counts)
            + f" | {sum(bool(c.xfail) for c in cases)} | "
            + ", ".join(f"`{s}`" for s in stages)
            + " |"
        )
    for category in CATEGORIES:
        lines += ["", f"### {category}", "", "| case | outcome |", "| --- | --- |"]
        for case in (c for c in CASES if c.category == category):
            said = {
                "parse": "refused at parse (`config`)",
                "before training": f"refused by `{case.stage}`",
                "after training": f"refused by `{case.stage}`, after training: {case.late}",
                "accepted": "accepted, handled correctly",
            }[outcome(case)]
            if case.xfail:
                said += f"; **wrong today**: {case.xfail}"
            lines.append(f"| `{case.id}` | {said} |")
    return "\n".join(lines)


def written_doc() -> str:
    """docs/bad_inputs.md with its generated part brought up to date."""
    text = DOC.read_text()
    start, stop = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    return text[:start] + "\n" + catalogue_summary() + "\n" + text[stop:]


def test_doc_is_generated_from_the_cases():
    assert DOC.read_text() == written_doc(), (
        f"docs/bad_inputs.md differs from the catalogue: run `{COMMAND}`"
    )


def test_catalogue_is_complete():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40
    assert {case.category for case in CASES} == set(CATEGORIES)
    for case in CASES:
        assert case.refused == (case.stage is not None)
        assert case.stage in BEFORE_TRAINING or case.late or not case.refused, case.id


def user_files(workdir: Path) -> set[str]:
    """The names (relative paths and their last parts) of what a case's input wrote."""
    names = set()
    for path in workdir.rglob("*"):
        relative = path.relative_to(workdir)
        if relative.parts[0] in ("results", ".snakemake") or path.name == "config.yaml":
            continue
        names |= {str(relative), path.name}
    return names


_STORE = re.compile(r"\bresults/")
_SNAKEMAKE_LINES = re.compile(
    r"^(Removing output files of failed job|Removing temporary output|Shutting down|"
    r"Complete log|Storing output|Select jobs|Execute \d+ jobs|Finished jobid|Logfile |"
    r"Will exit after|WorkflowError:|"
    r"Exiting because a job execution failed|\[|\S+\.log:?$|Touching output file|Command: )"
)


def store_only_lines(output: str, inputs: set[str]) -> list[str]:
    """Lines of the messages that name a store under results/ but none of the user's files:
    the project's own files, which the user never wrote, named without the input they came
    from. Snakemake's own lines (which jobs ran, which logs to read) are not messages."""
    found = []
    for line in messages(output).splitlines():
        stripped = line.strip()
        if not _STORE.search(stripped) or _SNAKEMAKE_LINES.match(stripped):
            continue
        if not any(name in stripped for name in inputs):
            found.append(stripped)
    return found


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input(case: Case, tmp_path: Path):
    config = case.make(tmp_path)
    extra: tuple[str, ...] = ()
    if isinstance(config, str):  # a config file's text, read as given after config.yaml
        (tmp_path / "user.yaml").write_text(config)
        config = yaml.safe_load(config)
        extra = ("--configfile", str(tmp_path / "config.yaml"), str(tmp_path / "user.yaml"))
    inputs = user_files(tmp_path)
    result: subprocess.CompletedProcess[str] = run_snakemake(
        tmp_path, config, "--cores", "2", *extra, *case.targets, timeout=TIMEOUT
    )
    output = result.stdout + result.stderr
    shown = f"exit {result.returncode}; output:\n{output[-6000:]}"

    # 1. exit status
    if case.refused:
        assert result.returncode != 0, shown
    else:
        assert result.returncode == 0, shown
    # 3. stage
    failed = failed_rules(output)
    if case.stage == "config":
        assert not failed, shown
        assert not (tmp_path / "results").exists(), shown
    elif case.stage is not None:
        assert failed and failed[0] == case.stage, shown
    # 2. message naming the culprit
    searched = messages(output) + ("" if case.refused else "\n" + job_logs(tmp_path))
    assert re.search(case.message, searched), f"no match for {case.message!r}; {shown}"
    # ... and no message names only a store under results/ (the user's file beside it)
    assert not store_only_lines(output, inputs), (store_only_lines(output, inputs), shown)
    # 4. nothing finished-looking left
    if case.refused:
        for dataset in config["datasets"]:
            folder = tmp_path / "results" / dataset
            assert not (folder / "headline.csv").exists()
            assert not (folder / "tables").exists(), sorted((folder / "tables").iterdir())
            assert not list(folder.glob("models/*/model.pt"))
        for path in failed_outputs(output):
            assert not (tmp_path / path).exists(), path
    else:
        assert case.check is not None
        case.check(tmp_path)


if __name__ == "__main__":
    DOC.write_text(written_doc())
    print(f"wrote {DOC}")
