"""Expression data of the scRNA branch: the demo's pbmc68k_reduced or a user's .h5ad, its
matrix as a checked dense array, and its log1p values aligned to a token store's cells (the
input of differential expression and of the feature browser).

Neither torch nor scanpy is imported here, so that the jobs that only read expression (GO
enrichment of every model, the feature browser) start in about a second instead of four.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.files import PathLike

log = logging.getLogger(__name__)

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


def expression_values(adata: anndata.AnnData, matrix: str, where: str) -> tuple[Any, np.ndarray]:
    """(cells x genes values, gene names) from ``raw``, ``X`` or ``layer:<name>``."""
    if matrix == "raw":
        if adata.raw is None:
            raise ValueError(
                f"{where}: enrich.expression.matrix is 'raw' but the data has no .raw; "
                "use 'X' or 'layer:<name>' (log1p-normalised values)"
            )
        return adata.raw.X, np.asarray(adata.raw.var_names, dtype=object)
    if matrix == "X":
        return adata.X, np.asarray(adata.var_names, dtype=object)
    layer = matrix.removeprefix("layer:")
    if layer not in adata.layers:
        raise ValueError(
            f"{where}: enrich.expression.matrix {matrix!r}: no layer {layer!r}; "
            f"layers: {list(adata.layers)}"
        )
    return adata.layers[layer], np.asarray(adata.var_names, dtype=object)


def gene_symbols(names: Any) -> np.ndarray:
    """Gene names as stripped upper-case symbols, the form gene-set libraries are matched in
    (the same rule as `cellconcepts.enrich.genesets.normalise_symbols`, which sources may not
    import; a test checks that the two agree)."""
    return np.array([str(s).strip().upper() for s in names], dtype=object)


def aligned_expression(
    source: PathLike, matrix: str, obs: pd.DataFrame
) -> tuple[sp.csr_matrix | np.ndarray, np.ndarray]:
    """Log1p expression rows in token-store order (matched on ``obs_name``) and upper-cased
    gene symbols; scaled (negative) values and repeated cell or gene names are refused."""
    adata = load_expression(source)
    where = f"{source} (enrich.expression.matrix: {matrix})"
    values, genes = expression_values(adata, matrix, where=where)
    if "obs_name" not in obs.columns:
        raise ValueError("token store obs.parquet: no 'obs_name' column to match the cells on")
    names = pd.Index(adata.obs_names.astype(str))
    if names.has_duplicates:
        raise ValueError(
            f"{source}: repeated cell names (obs_names), e.g. "
            f"{list(names[names.duplicated()][:5])}; expected one row per cell"
        )
    symbols = gene_symbols(genes)
    repeated = pd.Series(symbols).duplicated()
    if repeated.any():
        raise ValueError(
            f"{where}: {int(repeated.sum())} gene names repeat once upper-cased (e.g. "
            f"{sorted(set(symbols[repeated.to_numpy()]))[:5]}); expected one column per gene"
        )
    rows = names.get_indexer(obs["obs_name"].astype(str))
    if (rows < 0).any():
        missing = obs["obs_name"][rows < 0].head(5).tolist()
        raise ValueError(
            f"{source}: {int((rows < 0).sum())} cells of the token store are not in the "
            f"expression data (e.g. {missing})"
        )
    values = values[rows]
    values = (
        sp.csr_matrix(values, dtype=np.float64)
        if sp.issparse(values)
        else np.asarray(values, dtype=np.float64)
    )
    if values.min() < 0:
        raise ValueError(
            f"{where}: values go down to {values.min():.3g}; differential expression and fold "
            "changes need log1p-normalised expression (>= 0), not scaled data (e.g. "
            "pbmc68k_reduced's X); use the raw or a layer of normalised values"
        )
    if values.max() > 30:
        log.warning(
            "%s: values reach %.1f; fold changes assume log1p-normalised expression, not counts",
            where,
            values.max(),
        )
    return values, symbols
