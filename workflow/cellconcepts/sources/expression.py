"""Expression data of the scRNA branch: the demo's pbmc68k_reduced or a user's .h5ad, and its
matrix as a checked dense array.

Neither torch nor scanpy is imported here, so that the jobs that only read expression (GO
enrichment of every model, the feature browser) start in about a second instead of four.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import scipy.sparse as sp

from cellconcepts.files import PathLike

PBMC_DEMO = "pbmc68k_reduced"


def _shipped_pbmc68k() -> anndata.AnnData:
    """``scanpy.datasets.pbmc68k_reduced()``: the file scanpy ships, read as that function reads
    it but without importing scanpy (2.3 s); through scanpy if the file is not where it was."""
    spec = importlib.util.find_spec("scanpy")
    path = Path(spec.origin).parent / "datasets" / "10x_pbmc68k_reduced.h5ad" if spec else None
    if path is None or not path.is_file():
        import scanpy as sc

        return sc.datasets.pbmc68k_reduced()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="anndata")
        return anndata.read_h5ad(path)


def load_expression(source: PathLike) -> anndata.AnnData:
    """Load the expression data: ``"pbmc68k_reduced"`` (shipped with scanpy) or an .h5ad path."""
    if str(source) == PBMC_DEMO:
        return _shipped_pbmc68k()
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"expression data {str(path)!r} not found: expected an existing .h5ad file "
            f"or the built-in dataset name {PBMC_DEMO!r}"
        )
    if path.suffix != ".h5ad":
        raise ValueError(f"expression data {str(path)!r}: expected an .h5ad file")
    return anndata.read_h5ad(path)


def expression_matrix(X: Any, *, name: str = "X") -> np.ndarray:
    """Dense float32 (cells, genes) copy of ``X`` (numpy, scipy.sparse or torch), checked finite."""
    if hasattr(X, "detach"):  # a torch tensor
        X = X.detach().cpu().numpy()
    if sp.issparse(X):
        X = X.toarray()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d (cells, genes) matrix, got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty matrix, got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise ValueError(f"{name}: expected finite values, row {bad} has NaN or inf")
    return X
