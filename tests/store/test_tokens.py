"""Tests for cellconcepts.store (tokens, readers): token store round trip, validation,
batching, embedding readers."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellconcepts.store.layout import TOKEN_OBS as OBS_FILE
from cellconcepts.store.layout import TOKENS as TOKENS_FILE
from cellconcepts.store.readers import read_embeddings
from cellconcepts.store.tokens import TokenStore, iter_batches, write_token_store


def make_obs(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "token_id": [f"t{i}" for i in range(n)],
            "is_control": np.arange(n) % 3 == 0,
            "split": np.where(np.arange(n) < n - 2, "train", "test"),
            "cell_type": pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
            "plate": np.arange(n) // 4,
        }
    )


def make_tokens(n: int = 10, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# --- token store -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, dtype):
    tokens = make_tokens(10, 4)
    obs = make_obs(10)
    written = write_token_store(tmp_path / "store", tokens, obs, dtype=dtype)
    store = TokenStore.open(tmp_path / "store")

    assert store.tokens.dtype == np.dtype(dtype)
    assert isinstance(store.tokens, np.memmap)
    assert isinstance(written.tokens, np.memmap)
    assert (store.n_tokens, store.dim) == (10, 4)
    np.testing.assert_array_equal(store.tokens, tokens.astype(dtype))
    assert isinstance(store.obs.index, pd.RangeIndex)
    assert list(store.obs.columns) == list(obs.columns)
    assert store.obs["token_id"].tolist() == obs["token_id"].tolist()
    assert store.obs["is_control"].dtype == bool
    np.testing.assert_array_equal(store.obs["is_control"], obs["is_control"])
    assert store.obs["split"].tolist() == obs["split"].tolist()
    assert store.obs["cell_type"].astype(str).tolist() == obs["cell_type"].astype(str).tolist()
    np.testing.assert_array_equal(store.obs["plate"], obs["plate"])
    # No temporary files are left behind.
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted([TOKENS_FILE, OBS_FILE])


def test_memmap_is_read_only(tmp_path):
    store = write_token_store(tmp_path / "s", make_tokens(6, 3), make_obs(6))
    with pytest.raises(ValueError):
        store.tokens[0, 0] = 1.0


def test_write_reindexes_obs_and_overwrites(tmp_path):
    obs = make_obs(6)
    obs.index = [10, 11, 12, 13, 14, 15]
    write_token_store(tmp_path / "s", make_tokens(6, 3, seed=1), obs)
    tokens = make_tokens(6, 3, seed=2)
    store = write_token_store(tmp_path / "s", tokens, obs)
    assert list(store.obs.index) == list(range(6))
    np.testing.assert_array_equal(store.tokens, tokens)


def test_missing_required_column(tmp_path):
    obs = make_obs(5).drop(columns=["split"])
    with pytest.raises(ValueError, match="split"):
        write_token_store(tmp_path / "s", make_tokens(5), obs)
    assert not (tmp_path / "s" / TOKENS_FILE).exists()


def test_duplicate_token_id(tmp_path):
    obs = make_obs(5)
    obs.loc[3, "token_id"] = "t1"
    with pytest.raises(ValueError, match="token_id.*unique"):
        write_token_store(tmp_path / "s", make_tokens(5), obs)


def test_bad_split_value(tmp_path):
    obs = make_obs(5)
    obs.loc[2, "split"] = "validation"
    with pytest.raises(ValueError, match=r"split.*row 2.*validation"):
        write_token_store(tmp_path / "s", make_tokens(5), obs)


def test_row_count_mismatch_on_write(tmp_path):
    with pytest.raises(ValueError, match="6 rows"):
        write_token_store(tmp_path / "s", make_tokens(5), make_obs(6))


def test_nan_row_named_and_nothing_left(tmp_path):
    tokens = make_tokens(8)
    tokens[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"row 5 \(token_id 't5'\)"):
        write_token_store(tmp_path / "s", tokens, make_obs(8))
    assert list((tmp_path / "s").iterdir()) == []


def test_float16_overflow_is_not_finite(tmp_path):
    tokens = make_tokens(4)
    tokens[1, 0] = 1e6
    with pytest.raises(ValueError, match="row 1"):
        write_token_store(tmp_path / "s", tokens, make_obs(4), dtype="float16")


def test_open_missing_file(tmp_path):
    write_token_store(tmp_path / "s", make_tokens(4), make_obs(4))
    (tmp_path / "s" / OBS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=OBS_FILE):
        TokenStore.open(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="nope"):
        TokenStore.open(tmp_path / "nope")


def test_open_missing_columns(tmp_path):
    write_token_store(tmp_path / "s", make_tokens(4), make_obs(4))
    make_obs(4).drop(columns=["is_control", "token_id"]).to_parquet(tmp_path / "s" / OBS_FILE)
    with pytest.raises(ValueError, match=r"obs\.parquet.*\['token_id', 'is_control'\]"):
        TokenStore.open(tmp_path / "s")


def test_open_row_count_mismatch(tmp_path):
    write_token_store(tmp_path / "s", make_tokens(4), make_obs(4))
    make_obs(3).to_parquet(tmp_path / "s" / OBS_FILE)
    with pytest.raises(ValueError, match=r"3 rows.*4 tokens"):
        TokenStore.open(tmp_path / "s")


# --- iter_batches ------------------------------------------------------------------------------


def collect(iterator):
    rows, batches = zip(*iterator, strict=True)
    return list(rows), list(batches)


def test_iter_batches_fixed_order_and_last_partial(tmp_path):
    tokens = make_tokens(10, 3)
    store = write_token_store(tmp_path / "s", tokens, make_obs(10), dtype="float16")
    rows, batches = collect(iter_batches(store.tokens, 4))
    assert [r.tolist() for r in rows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), tokens.astype(np.float16))
    batches[0][0, 0] = 123.0  # batches are writable copies, not views into the memmap


def test_iter_batches_indices_order_kept():
    tokens = make_tokens(10, 3)
    indices = np.array([7, 2, 9, 0, 5])
    rows, batches = collect(iter_batches(tokens, 2, indices=indices))
    assert np.concatenate(rows).tolist() == indices.tolist()
    np.testing.assert_array_equal(np.concatenate(batches), tokens[indices])


def test_iter_batches_boolean_mask():
    tokens = make_tokens(6, 2)
    mask = np.array([True, False, True, True, False, False])
    rows, batches = collect(iter_batches(tokens, 10, indices=mask))
    assert rows[0].tolist() == [0, 2, 3]
    np.testing.assert_array_equal(batches[0], tokens[[0, 2, 3]])


def test_iter_batches_shuffle_deterministic_and_covering():
    tokens = make_tokens(23, 2)
    indices = np.arange(3, 20)
    first = np.concatenate(collect(iter_batches(tokens, 5, indices=indices, shuffle=True))[0])
    again = np.concatenate(collect(iter_batches(tokens, 5, indices=indices, shuffle=True))[0])
    other = np.concatenate(
        collect(iter_batches(tokens, 5, indices=indices, shuffle=True, seed=1))[0]
    )
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, np.random.default_rng(0).permutation(indices))
    assert not np.array_equal(first, other)
    assert sorted(first.tolist()) == indices.tolist()
    assert sorted(other.tolist()) == indices.tolist()


def test_iter_batches_shuffled_rows_match_values():
    tokens = make_tokens(30, 4)
    for rows, batch in iter_batches(tokens, 7, shuffle=True, seed=3):
        np.testing.assert_array_equal(batch, tokens[rows])


def test_iter_batches_transform_applied():
    tokens = make_tokens(9, 3)
    calls = []

    def double(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return 2 * x

    rows, batches = collect(iter_batches(tokens, 4, transform=double))
    assert calls == [4, 4, 1]
    np.testing.assert_allclose(np.concatenate(batches), 2 * tokens)


def test_iter_batches_bad_arguments():
    tokens = make_tokens(5, 2)
    with pytest.raises(ValueError, match="out of range"):
        list(iter_batches(tokens, 2, indices=np.array([0, 5])))
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_batches(tokens, 0))


# --- read_embeddings ---------------------------------------------------------------------------


def make_adata(n: int = 6, d: int = 3, sparse: bool = False) -> anndata.AnnData:
    x = make_tokens(n, d, seed=4)
    x[x < 0] = 0
    adata = anndata.AnnData(
        X=sp.csr_matrix(x) if sparse else x,
        obs=pd.DataFrame(
            {"cell_type": ["a", "b", "c"] * (n // 3)}, index=[f"cell{i}" for i in range(n)]
        ),
    )
    adata.obsm["X_emb"] = make_tokens(n, 2, seed=5).astype(np.float64)
    return adata


@pytest.mark.parametrize("sparse", [False, True])
def test_read_h5ad_x(tmp_path, sparse):
    adata = make_adata(sparse=sparse)
    adata.write_h5ad(tmp_path / "a.h5ad")
    x, obs = read_embeddings(tmp_path / "a.h5ad")
    expected = adata.X.toarray() if sparse else adata.X
    assert x.dtype == np.float32 and isinstance(x, np.ndarray)
    np.testing.assert_array_equal(x, expected)
    assert obs["obs_name"].tolist() == [f"cell{i}" for i in range(6)]
    assert obs["cell_type"].astype(str).tolist() == ["a", "b", "c"] * 2
    assert isinstance(obs.index, pd.RangeIndex)


def test_read_h5ad_obsm(tmp_path):
    adata = make_adata()
    adata.write_h5ad(tmp_path / "a.h5ad")
    x, obs = read_embeddings(tmp_path / "a.h5ad", obsm_key="X_emb")
    np.testing.assert_array_equal(x, adata.obsm["X_emb"].astype(np.float32))
    assert len(obs) == 6
    with pytest.raises(ValueError, match=r"'X_pca' not found.*\['X_emb'\]"):
        read_embeddings(tmp_path / "a.h5ad", obsm_key="X_pca")


def test_read_parquet_float_columns_are_dims(tmp_path):
    tokens = make_tokens(5, 3)
    table = pd.DataFrame(tokens, columns=["e0", "e1", "e2"])
    table["label"] = list("abcde")
    table["plate"] = [1, 1, 2, 2, 3]
    table.to_parquet(tmp_path / "e.parquet")
    x, obs = read_embeddings(tmp_path / "e.parquet")
    np.testing.assert_array_equal(x, tokens)
    assert list(obs.columns) == ["label", "plate"]
    assert obs["label"].tolist() == list("abcde")


def test_read_parquet_with_obs_path(tmp_path):
    tokens = make_tokens(4, 2)
    pd.DataFrame(tokens, columns=["a", "b"]).to_parquet(tmp_path / "e.parquet")
    pd.DataFrame({"label": list("wxyz")}).to_csv(tmp_path / "obs.csv", index=False)
    x, obs = read_embeddings(tmp_path / "e.parquet", obs_path=tmp_path / "obs.csv")
    np.testing.assert_array_equal(x, tokens)
    assert obs["label"].tolist() == list("wxyz")


def test_read_npy_with_obs(tmp_path):
    tokens = make_tokens(4, 3).astype(np.float64)
    np.save(tmp_path / "e.npy", tokens)
    obs = make_obs(4)
    obs.to_parquet(tmp_path / "obs.parquet")
    x, got = read_embeddings(tmp_path / "e.npy", obs_path=tmp_path / "obs.parquet")
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, tokens.astype(np.float32))
    assert got["token_id"].tolist() == obs["token_id"].tolist()
    pd.DataFrame({"label": list("abc")}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=r"short\.csv.*3 rows.*4 rows"):
        read_embeddings(tmp_path / "e.npy", obs_path=tmp_path / "short.csv")


def test_read_npy_requires_obs_and_unknown_suffix(tmp_path):
    np.save(tmp_path / "e.npy", make_tokens(3, 2))
    with pytest.raises(ValueError, match=r"e\.npy.*obs_path"):
        read_embeddings(tmp_path / "e.npy")
    (tmp_path / "e.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match=r"e\.txt.*unsupported"):
        read_embeddings(tmp_path / "e.txt")
    with pytest.raises(FileNotFoundError, match="missing.h5ad"):
        read_embeddings(tmp_path / "missing.h5ad")


def test_read_embeddings_parquet_named_columns_keep_float_metadata_in_obs(tmp_path):
    table = pd.DataFrame(
        {
            "emb_0": [0.1, 0.2, 0.3],
            "emb_1": [1.0, 2.0, 3.0],
            "pct_mito": [0.05, 0.10, 0.02],
            "cell_type": ["a", "b", "a"],
        }
    )
    path = tmp_path / "emb.parquet"
    table.to_parquet(path)
    tokens, obs = read_embeddings(path, embedding_columns="emb_")
    np.testing.assert_array_equal(tokens, table[["emb_0", "emb_1"]].to_numpy(np.float32))
    assert {"pct_mito", "cell_type"} <= set(obs.columns)
    tokens, _ = read_embeddings(path, embedding_columns=["emb_1"])
    assert tokens.shape == (3, 1)
    with pytest.raises(ValueError, match="missing columns"):
        read_embeddings(path, embedding_columns=["emb_9"])


def test_a_file_that_is_not_npy_is_refused_naming_it(tmp_path):
    from cellconcepts.files import load_npy

    bad = tmp_path / "images.npy"
    bad.write_bytes(b"not an npy file")
    with pytest.raises(ValueError, match=r"images\.npy: not a readable \.npy array") as info:
        load_npy(bad)
    assert "pickle" not in str(info.value)
    np.save(bad, np.arange(1000.0))
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"images\.npy: a damaged or cut-short \.npy array"):
        load_npy(bad, mmap_mode="r")
    np.save(bad, np.arange(3.0))
    assert load_npy(bad).tolist() == [0.0, 1.0, 2.0]


def test_an_embedding_without_rows_is_refused_naming_it(tmp_path):
    path = tmp_path / "emb.parquet"
    pd.DataFrame({"emb_0": pd.Series([], dtype="float32"), "cell": []}).to_parquet(path)
    with pytest.raises(ValueError, match=r"emb\.parquet: no rows"):
        read_embeddings(path)


def test_npy_row_writer_appends_rows_and_checks_the_count(tmp_path):
    from cellconcepts.files import NpyRowWriter

    path = tmp_path / "rows.npy"
    with open(path, "wb") as handle:
        writer = NpyRowWriter(handle, (5, 2), np.float32)
        writer.write(np.arange(6).reshape(3, 2))
        writer.write(np.arange(6, 10).reshape(2, 2))
        writer.close()
    np.testing.assert_array_equal(np.load(path), np.arange(10, dtype=np.float32).reshape(5, 2))
    with open(path, "wb") as handle:
        writer = NpyRowWriter(handle, (5, 2), np.float32)
        writer.write(np.zeros((3, 2)))
        with pytest.raises(ValueError, match="wrote 3 of 5 rows"):
            writer.close()
        with pytest.raises(ValueError, match=r"expected rows of shape \(2,\)"):
            writer.write(np.zeros((1, 3)))
