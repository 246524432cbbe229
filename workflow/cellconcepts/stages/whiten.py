"""Stage of workflow/rules/whiten.smk: control whitening, fitted on the control rows only."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cellconcepts.files import PathLike
from cellconcepts.store.layout import TokenFiles
from cellconcepts.store.tokens import TokenStore

log = logging.getLogger(__name__)


def fit_whitening(
    *,
    tokens: PathLike,
    obs: PathLike,
    whitening: PathLike,
    method: str,
    eps_relative: float,
    n_components: int | None,
) -> None:
    """Fit the PCA whitening (or the centring-only variant, ``method`` "none") on the store's
    control rows and save it as a small transform, applied on the fly by later stages."""
    from cellconcepts.dictionary.whitening import fit_whitening as fit

    store = TokenStore.open(TokenFiles(Path(tokens), Path(obs)), columns=["is_control"])
    controls = np.flatnonzero(store.obs["is_control"].to_numpy())
    fitted = fit(
        store.tokens, controls, method, n_components=n_components, eps_relative=eps_relative
    )
    fitted.save(whitening)
    log.info(
        "%s whitening on %d control rows: %d -> %d dims",
        method,
        len(controls),
        fitted.input_dim,
        fitted.output_dim,
    )
