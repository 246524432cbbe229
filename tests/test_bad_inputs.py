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
the catalogue. Run it with ``python3 -m pytest tests/test_bad_inputs.py``.
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
from conftest import TINY_VIT, run_snakemake

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
BEFORE_TRAINING = {
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
}


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
    writes one and returns its path; default: a ViT saved with `vit.save_pretrained`)."""

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

    from cellconcepts.microscopy import vit

    torch.manual_seed(0)
    encoder = vit.ViTEncoder(vit.ViTConfig(**(architecture or ARCHITECTURE)))
    vit.save_pretrained(encoder, workdir / "my_model")
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
        r"dictionary\.sparsity 8 exceeds dictionary\.n_features 4",
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
        r"row 7 \(token_id '7'\) has NaN or inf",
        "import_tokens",
    ),
    refused(
        "tokens-inf",
        "tokens",
        with_table(_inf_row),
        r"row 11 \(token_id '11'\) has NaN or inf",
        "import_tokens",
    ),
    refused(
        "tokens-overflow-float32",
        "tokens",
        with_table(_overflow),
        r"row 13 \(token_id '13'\) has NaN or inf",
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
        r"emb\.parquet: embedding_columns 'x_' match no column",
        "import_tokens",
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
        r"bad\.parquet: cannot read it as a Parquet table",
        "import_tokens",
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
        r"column 'token_id' must be unique.*'t0'",
        "import_tokens",
    ),
    refused(
        "obs-missing-token-id",
        "obs",
        with_table(
            lambda t: t.assign(token_id=[None if i == 3 else f"t{i}" for i in range(N_ROWS)])
        ),
        r"column 'token_id' has a missing value at row 3",
        "import_tokens",
    ),
    refused(
        "obs-h5ad-duplicate-cell-names",
        "obs",
        h5ad_input(duplicate_names=True),
        r"'token_id' must be unique.*'cell4'",
        "import_tokens",
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
    accepted(
        "controls-fewer-than-dimensions",
        "controls",
        with_table(_few_controls),
        r"5 control rows for 8-dimensional tokens: the PCA whitening's control covariance is "
        r"rank-deficient",
        whitening_finite,
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
        "embed_images",
    ),
    refused(
        "images-wrong-channels",
        "images",
        microscopy_input(lambda images, obs: (images[:, :5], obs)),
        r"images\.npy: images are 5x32x32 but the model expects 6x32x32",
        "embed_images",
    ),
    refused(
        "images-wrong-size",
        "images",
        microscopy_input(lambda images, obs: (np.tile(images, (1, 1, 2, 2)), obs)),
        r"images\.npy: images are 6x64x64 but the model expects 6x32x32",
        "embed_images",
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
        r"images\.npy",
        "embed_images",
    ),
    refused(
        "images-gene-column-missing",
        "images",
        microscopy_input(_gene_table, enrich={"enabled": True}),
        r"datasets\.mine\.enrich\.screen\.gene_column: 'gene' is not a column of",
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


def test_catalogue_is_complete():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40
    categories = {case.category for case in CASES}
    assert categories == {
        "config",
        "tokens",
        "obs",
        "labels",
        "splits",
        "controls",
        "images",
        "gene sets",
        "checkpoints",
    }
    for case in CASES:
        assert case.refused == (case.stage is not None)
        assert case.stage in BEFORE_TRAINING or case.late or not case.refused, case.id


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input(case: Case, tmp_path: Path):
    config = case.make(tmp_path)
    result: subprocess.CompletedProcess[str] = run_snakemake(
        tmp_path, config, "--cores", "2", *case.targets, timeout=TIMEOUT
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
