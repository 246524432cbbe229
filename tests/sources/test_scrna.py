"""Tests for the scRNA branch (cellconcepts.sources.scrna) on the real pbmc68k_reduced data."""

from __future__ import annotations

import subprocess
import sys

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cellconcepts.sources.expression import load_expression
from cellconcepts.sources.scrna import (
    ExpressionAutoencoder,
    embed_cells,
    load_expression_model,
    save_expression_model,
    train_expression_autoencoder,
)

EPOCHS = 20
LATENT = 16


@pytest.fixture(scope="module")
def pbmc() -> anndata.AnnData:
    return load_expression("pbmc68k_reduced")


@pytest.fixture(scope="module")
def trained(pbmc: anndata.AnnData) -> tuple[ExpressionAutoencoder, pd.DataFrame]:
    return train_expression_autoencoder(pbmc.X, latent_dim=LATENT, hidden_dim=128, epochs=EPOCHS)


def test_load_pbmc(pbmc: anndata.AnnData) -> None:
    assert pbmc.shape == (700, 765)
    assert {"bulk_labels", "louvain", "phase"} <= set(pbmc.obs.columns)


def test_the_demo_data_is_scanpys_pbmc68k_reduced(pbmc: anndata.AnnData) -> None:
    """Read from the file scanpy ships, without importing scanpy: the same AnnData as
    ``scanpy.datasets.pbmc68k_reduced()``."""
    import scanpy as sc

    expected = sc.datasets.pbmc68k_reduced()
    np.testing.assert_array_equal(pbmc.X, expected.X)
    np.testing.assert_array_equal(pbmc.raw.X.toarray(), expected.raw.X.toarray())
    pd.testing.assert_frame_equal(pbmc.obs, expected.obs)
    pd.testing.assert_frame_equal(pbmc.var, expected.var)
    assert set(pbmc.obsm) == set(expected.obsm) and set(pbmc.obsp) == set(expected.obsp)


def test_reading_expression_imports_neither_torch_nor_scanpy() -> None:
    """The enrichment jobs of every scRNA model read expression: they must not pay for torch
    and scanpy (about 3.8 s of imports per job)."""
    code = (
        "import sys, cellconcepts.sources.expression as e, cellconcepts.enrich.gene_lists; "
        "e.load_expression('pbmc68k_reduced'); "
        "print(sorted({'torch', 'scanpy'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_h5ad_names_the_path(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "cells.h5ad"
    with pytest.raises(FileNotFoundError, match="nowhere/cells.h5ad"):
        load_expression(str(missing))


def test_load_h5ad_path(tmp_path) -> None:
    adata = anndata.AnnData(
        X=np.arange(12, dtype=np.float32).reshape(3, 4),
        obs=pd.DataFrame(index=["a", "b", "c"]),
    )
    path = tmp_path / "small.h5ad"
    adata.write_h5ad(path)
    loaded = load_expression(path)
    np.testing.assert_array_equal(loaded.X, adata.X)
    other = tmp_path / "small.csv"
    other.write_text("x\n")
    with pytest.raises(ValueError, match="small.csv"):
        load_expression(other)


def test_training_lowers_loss(trained: tuple[ExpressionAutoencoder, pd.DataFrame]) -> None:
    _, history = trained
    assert list(history.columns) == ["epoch", "loss"]
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert np.isfinite(history["loss"]).all()
    assert history["loss"].iloc[-1] < 0.8 * history["loss"].iloc[0]


def test_embedding_shape_and_dtype(trained, pbmc: anndata.AnnData) -> None:
    model, _ = trained
    z = embed_cells(model, pbmc.X, batch_size=100)
    assert z.shape == (pbmc.n_obs, LATENT) and z.dtype == np.float32
    assert np.isfinite(z).all()
    # batching does not change the result; sparse input is densified
    np.testing.assert_allclose(z, embed_cells(model, sp.csr_matrix(pbmc.X)), atol=1e-5)
    # embedding = the encoder of the model applied to the expression row
    with torch.no_grad():
        direct = model.encoder(torch.from_numpy(np.asarray(pbmc.X[:5], dtype=np.float32)))
    np.testing.assert_allclose(z[:5], direct.numpy(), atol=1e-5)


def test_wrong_gene_count_is_an_error(trained) -> None:
    model, _ = trained
    with pytest.raises(ValueError, match="765"):
        embed_cells(model, np.zeros((3, 10), dtype=np.float32))


def test_determinism_by_seed(pbmc: anndata.AnnData) -> None:
    x = pbmc.X[:200]
    kwargs = dict(latent_dim=8, hidden_dim=32, epochs=3, batch_size=64)
    m1, h1 = train_expression_autoencoder(x, seed=5, **kwargs)
    m2, h2 = train_expression_autoencoder(x, seed=5, **kwargs)
    m3, _ = train_expression_autoencoder(x, seed=6, **kwargs)
    np.testing.assert_array_equal(embed_cells(m1, x), embed_cells(m2, x))
    pd.testing.assert_frame_equal(h1, h2)
    assert not np.array_equal(embed_cells(m1, x), embed_cells(m3, x))


def test_save_load_round_trip(trained, pbmc: anndata.AnnData, tmp_path) -> None:
    model, _ = trained
    path = tmp_path / "model" / "ae.pt"
    save_expression_model(model, path, {"dataset": "pbmc68k_reduced", "epochs": EPOCHS})
    loaded, meta = load_expression_model(path)
    assert meta == {"dataset": "pbmc68k_reduced", "epochs": EPOCHS}
    assert loaded.config == model.config
    np.testing.assert_array_equal(embed_cells(loaded, pbmc.X), embed_cells(model, pbmc.X))
    assert [p.name for p in path.parent.iterdir()] == ["ae.pt"]
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_expression_model(tmp_path / "absent.pt")


def test_embedding_carries_cell_type_signal(trained, pbmc: anndata.AnnData) -> None:
    # 10 bulk_labels classes (chance 0.1); this setting gives about 0.6-0.7 balanced accuracy
    model, _ = trained
    z = embed_cells(model, pbmc.X)
    y = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    clf = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")
    ).fit(z[train], y[train])
    assert balanced_accuracy_score(y[test], clf.predict(z[test])) > 0.5
