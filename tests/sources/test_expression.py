"""Expression data aligned to a token store (cellconcepts.sources.expression): the matrix
chosen, rows in token-store order, gene symbols, and the checks on values and names, on a small
hand-written .h5ad.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellconcepts.enrich.genesets import normalise_symbols
from cellconcepts.sources.expression import aligned_expression, gene_symbols

# --------------------------------------------------------------------------- aligned_expression

CELLS = ["c0", "c1", "c2", "c3"]
X = np.array([[0.0, 1.0, 2.0], [0.5, 0.0, 1.5], [3.0, 2.5, 0.0], [1.0, 1.0, 1.0]], dtype=np.float32)
RAW = np.array(
    [[0, 1, 0, 2], [4, 0, 0, 1], [0, 0, 3, 0], [1, 2, 3, 4]], dtype=np.float32
)  # log1p values too, 4 genes


def _write_h5ad(
    path: Path,
    *,
    cells: list[str] = CELLS,
    genes: tuple[str, ...] = ("cd3e", "Ms4a1", " Gnly "),
    raw: bool = True,
) -> str:
    anndata = pytest.importorskip("anndata")
    adata = anndata.AnnData(
        X=X.copy(), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=list(genes))
    )
    adata.layers["lognorm"] = sp.csr_matrix(X * 2)
    adata.layers["scaled"] = X - X.mean(axis=0)
    if raw:
        adata.raw = anndata.AnnData(
            X=sp.csr_matrix(RAW),
            obs=pd.DataFrame(index=cells),
            var=pd.DataFrame(index=["Cd3e", "ms4a1", "GNLY", "Nkg7"]),
        )
    adata.write_h5ad(path)
    return str(path)


def _obs(names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"token_id": np.arange(len(names)), "obs_name": names})


ORDER = ["c2", "c0", "c3"]


def test_aligned_expression_reorders_cells_and_upper_cases_genes(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")

    values, symbols = aligned_expression(source, "X", _obs(ORDER))
    assert isinstance(values, np.ndarray)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, X[[2, 0, 3]])
    assert list(symbols) == ["CD3E", "MS4A1", "GNLY"]

    values, symbols = aligned_expression(source, "raw", _obs(ORDER))
    assert sp.issparse(values)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values.toarray(), RAW[[2, 0, 3]])
    assert list(symbols) == ["CD3E", "MS4A1", "GNLY", "NKG7"]

    values, _ = aligned_expression(source, "layer:lognorm", _obs(["c1", "c1", "c0"]))
    assert sp.issparse(values)
    np.testing.assert_array_equal(values.toarray(), 2 * X[[1, 1, 0]])


def test_aligned_expression_refuses_scaled_data(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")
    with pytest.raises(ValueError, match="log1p"):
        aligned_expression(source, "layer:scaled", _obs(ORDER))


def test_aligned_expression_warns_on_counts(tmp_path: Path, caplog) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")
    anndata = pytest.importorskip("anndata")
    adata = anndata.read_h5ad(source)
    adata.layers["counts"] = X * 100
    adata.write_h5ad(source)
    with caplog.at_level(logging.WARNING, logger="cellconcepts.sources.expression"):
        aligned_expression(source, "layer:counts", _obs(ORDER))
    assert "not counts" in caplog.text


def test_aligned_expression_raw_missing_raises(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad", raw=False)
    with pytest.raises(ValueError, match="'raw'.*no .raw"):
        aligned_expression(source, "raw", _obs(ORDER))


def test_aligned_expression_unknown_layer_raises(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")
    with pytest.raises(ValueError, match="no layer 'nope'"):
        aligned_expression(source, "layer:nope", _obs(ORDER))


def test_aligned_expression_missing_cell_is_named(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")
    with pytest.raises(ValueError, match=r"1 cells .* not in the expression data.*'c9'"):
        aligned_expression(source, "X", _obs(["c0", "c9", "c1"]))
    with pytest.raises(ValueError, match="obs_name"):
        aligned_expression(source, "X", pd.DataFrame({"token_id": [0]}))


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_aligned_expression_repeated_cell_names_raise(tmp_path: Path) -> None:
    with pytest.warns(UserWarning):  # anndata: obs names not unique
        source = _write_h5ad(tmp_path / "data.h5ad", cells=["c0", "c1", "c1", "c3"], raw=False)
    with pytest.raises(ValueError, match=r"repeated cell names.*'c1'"):
        aligned_expression(source, "X", _obs(["c0"]))


def test_aligned_expression_genes_repeating_once_upper_cased_raise(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad", genes=("cd3e", "CD3E", "Gnly"), raw=False)
    with pytest.raises(ValueError, match=r"1 gene names repeat.*'CD3E'"):
        aligned_expression(source, "X", _obs(ORDER))


def test_gene_symbols_match_the_gene_set_normalisation() -> None:
    names = [" cd3e", "Actb ", "GNLY", 7, "ms4a1\t"]
    assert list(gene_symbols(names)) == ["CD3E", "ACTB", "GNLY", "7", "MS4A1"]
    np.testing.assert_array_equal(gene_symbols(names), normalise_symbols(names))
    assert gene_symbols(names).dtype == object
