"""A user's own embeddings (kind: tokens) go through the real import rule into a token store."""

from __future__ import annotations

import numpy as np
import pandas as pd
from testkit import run_snakemake

from cellconcepts.dictionary.whitening import Whitening
from cellconcepts.store.tokens import TokenStore


def test_parquet_embeddings_become_a_token_store_with_controls_and_split(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    table = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"emb_{i}" for i in range(6)])
    table["pct_mito"] = rng.uniform(size=n)
    table["guide"] = np.where(np.arange(n) % 3 == 0, "non-targeting", "GENE1")
    table["plate"] = [f"p{i % 5}" for i in range(n)]
    (tmp_path / "data").mkdir()
    table.to_parquet(tmp_path / "data" / "emb.parquet")
    config = {
        "datasets": {
            "mine": {
                "kind": "tokens",
                "tokens": {"path": "data/emb.parquet", "embedding_columns": "emb_"},
                "control": {"column": "guide", "values": ["non-targeting"]},
                "split": {"test_fraction": 0.2, "group_by": "plate"},
                "tasks": [{"name": "guide", "column": "guide", "group_by": "plate"}],
                # at most the 6 dimensions of the tokens (the default 8 is refused at parse)
                "dictionary": {"sparsity": [4]},
            }
        }
    }
    result = run_snakemake(
        tmp_path, config, "--cores", "1", "results/mine/whitening/pca.npz", timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    store = TokenStore.open(tmp_path / "results" / "mine" / "tokens")
    assert store.tokens.shape == (n, 6)
    assert "pct_mito" in store.obs.columns
    assert store.obs.is_control.sum() == 100
    test_plates = set(store.obs.loc[store.obs.split == "test", "plate"])
    train_plates = set(store.obs.loc[store.obs.split == "train", "plate"])
    assert test_plates and not test_plates & train_plates
    whitening = Whitening.load(tmp_path / "results" / "mine" / "whitening" / "pca.npz")
    controls = table.loc[table.guide == "non-targeting", [f"emb_{i}" for i in range(6)]]
    np.testing.assert_allclose(whitening.mean, controls.mean().to_numpy(), atol=1e-6)
