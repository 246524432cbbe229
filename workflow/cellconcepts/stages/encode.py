"""Stage of workflow/rules/encode.smk: sparse codes and reconstructions of every token."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import scipy.sparse as sp

from cellconcepts.device import set_threads
from cellconcepts.files import PathLike, atomic_path
from cellconcepts.store.layout import TokenFiles
from cellconcepts.store.tokens import TokenStore

log = logging.getLogger(__name__)


def encode_tokens(
    *,
    tokens: PathLike,
    obs: PathLike,
    whitening: PathLike,
    model: PathLike,
    codes: PathLike,
    reconstructions: PathLike,
    cosine: PathLike,
    threads: int | None = None,
    execution: Mapping[str, Any],
) -> None:
    """Codes (CSR), original-space reconstructions and per-token reconstruction cosines."""
    from cellconcepts.dictionary.encode import encode_tokens as encode
    from cellconcepts.dictionary.models import load_model
    from cellconcepts.dictionary.whitening import Whitening

    set_threads(threads)
    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)), columns=["token_id", "split"])
    dictionary, _ = load_model(model)
    result = encode(
        dictionary,
        store.tokens,
        Whitening.load(whitening),
        batch_size=execution["batch_size"],
        device=execution["device"],
        reconstruction_path=Path(reconstructions),
    )
    with atomic_path(codes) as tmp, open(tmp, "wb") as handle:
        sp.save_npz(handle, result.codes.tocsr())
    table = pd.DataFrame(
        {
            "token_id": store.obs["token_id"].to_numpy(),
            "split": store.obs["split"].to_numpy(),
            "cosine_model": result.cosine_model,
            "cosine_original": result.cosine_original,
        }
    )
    with atomic_path(cosine) as tmp:
        table.to_parquet(tmp, index=False)
