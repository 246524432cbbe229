"""Embedding readers: a user's h5ad (X or an obsm key), parquet or npy + obs table, as a matrix
and its per-row metadata, ready to become a token store."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from cellconcepts.files import PathLike, load_npy

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _reading(path: PathLike, what: str) -> Iterator[None]:
    """Low-level failures of a reader (empty, truncated, not UTF-8, not the format its suffix
    says) re-raised naming the file and what was expected."""
    try:
        yield
    except (FileNotFoundError, ValueError) as err:
        if str(path) in str(err):
            raise
        message = f"{path}: cannot read it as {what} ({type(err).__name__}: {err})"
        raise ValueError(message) from err
    except Exception as err:  # pyarrow, h5py, pandas parser errors have their own types
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"{path}: cannot read it as {what} ({type(err).__name__}: {first})"
        ) from err


def read_csv_as_written(path: PathLike) -> pd.DataFrame:
    """A user's CSV table with every cell read as the text written in it: ids and labels such
    as "00012", "1e5" or "None" stay strings (pandas would make numbers of the first two and
    a missing value of the last); only an empty cell is missing. Numbers are parsed where a
    stage needs them (`store.obs.parse_flags`, the oracle column)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def _read_obs_table(obs_path: Path) -> pd.DataFrame:
    """Read per-row metadata from .parquet or .csv (every CSV cell read as written)."""
    obs_path = Path(obs_path)
    if not obs_path.is_file():
        raise FileNotFoundError(f"obs file not found: {obs_path}")
    suffix = obs_path.suffix.lower()
    if suffix == ".parquet":
        with _reading(obs_path, "a Parquet table"):
            return pd.read_parquet(obs_path)
    if suffix == ".csv":
        with _reading(obs_path, "a UTF-8 CSV table"):
            table = read_csv_as_written(obs_path)
        logger.info(
            "%s: %d rows, every cell read as written (text; only empty cells are missing)",
            obs_path,
            len(table),
        )
        return table
    raise ValueError(f"{obs_path}: obs file must be .parquet or .csv, got {suffix!r}")


def _to_dense_float32(matrix: object, where: str) -> np.ndarray:
    """Dense float32 copy of a numpy / scipy.sparse / DataFrame matrix."""
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    elif isinstance(matrix, pd.DataFrame):
        matrix = matrix.to_numpy()
    with np.errstate(over="ignore"):  # a value beyond float32's range is named later
        array = np.asarray(matrix, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D embedding matrix, got shape {array.shape}")
    return array


def _index_to_column(obs: pd.DataFrame, where: str) -> pd.DataFrame:
    """Reset to a RangeIndex, keeping a meaningful original index as column ``obs_name``."""
    if isinstance(obs.index, pd.RangeIndex) and obs.index.start == 0 and obs.index.step == 1:
        return obs.reset_index(drop=True)
    if "obs_name" in obs.columns:
        logger.warning("%s: obs already has a column 'obs_name'; dropping the index", where)
        return obs.reset_index(drop=True)
    obs = obs.copy()
    obs.insert(0, "obs_name", obs.index.astype(str))
    return obs.reset_index(drop=True)


def _read_h5ad(
    path: Path, obsm_key: str | None, obs_path: PathLike | None
) -> tuple[np.ndarray, pd.DataFrame | None, list[str]]:
    """``X`` (dense or sparse) or ``obsm[obsm_key]`` of an AnnData file as float32, its obs
    with the original index kept as ``obs_name`` (None when ``obs_path`` supplies obs), and
    what each column is called in messages."""
    import anndata

    with _reading(path, "an AnnData .h5ad file"):
        adata = anndata.read_h5ad(path, backed=None)
    if obsm_key is not None:
        if obsm_key not in adata.obsm:
            raise ValueError(
                f"{path}: obsm key {obsm_key!r} not found; available keys: "
                f"{sorted(adata.obsm.keys())}"
            )
        embeddings = _to_dense_float32(adata.obsm[obsm_key], f"{path} obsm[{obsm_key!r}]")
        names = [f"obsm[{obsm_key!r}] column {j}" for j in range(embeddings.shape[1])]
    else:
        if adata.X is None:
            raise ValueError(
                f"{path}: X is empty; pass obsm_key (available: {sorted(adata.obsm.keys())})"
            )
        embeddings = _to_dense_float32(adata.X, f"{path} X")
        names = [f"X column {j} ({name!r})" for j, name in enumerate(adata.var_names)]
    obs = _index_to_column(adata.obs, str(path)) if obs_path is None else None
    return embeddings, obs, names


def _parquet_dimensions(
    table: pd.DataFrame,
    path: Path,
    embedding_columns: str | list[str] | None,
    obs_path: PathLike | None,
) -> list:
    """The embedding columns of a parquet table: those named by ``embedding_columns`` (a list
    or a name prefix); without it, every column when obs comes from ``obs_path`` (all must be
    numeric), else every float column (the others are obs)."""
    if embedding_columns is not None:
        if isinstance(embedding_columns, str):
            dims = [c for c in table.columns if str(c).startswith(embedding_columns)]
        else:
            dims = list(embedding_columns)
        missing = [c for c in dims if c not in table.columns]
        if not dims or missing:
            raise ValueError(
                f"{path}: embedding_columns {embedding_columns!r} match "
                f"{'missing columns ' + str(missing) if missing else 'no column'}; "
                f"columns: {list(table.columns)}"
            )
        return dims
    if obs_path is None:
        dims = [c for c in table.columns if pd.api.types.is_float_dtype(table[c])]
        if not dims:
            raise ValueError(
                f"{path}: no float columns found; embedding dimensions must be float columns "
                f"(columns: {list(table.columns)})"
            )
        return dims
    dims = list(table.columns)
    non_numeric = [
        c
        for c in dims
        if not pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])
    ]
    if non_numeric:
        raise ValueError(
            f"{path}: with obs_path given, every column must be a numeric embedding "
            f"dimension; non-numeric columns: {non_numeric}"
        )
    return dims


def _read_parquet(
    path: Path, embedding_columns: str | list[str] | None, obs_path: PathLike | None
) -> tuple[np.ndarray, pd.DataFrame | None, list[str]]:
    """The embedding columns of a parquet table as float32, the other columns as obs (None
    when ``obs_path`` supplies obs) and the embedding columns' names; see
    :func:`_parquet_dimensions` for which are which."""
    with _reading(path, "a Parquet table"):
        table = pd.read_parquet(path)
    dims = _parquet_dimensions(table, path, embedding_columns, obs_path)
    not_numbers = [
        c
        for c in dims
        if not pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])
    ]
    if not_numbers:
        raise ValueError(
            f"{path}: embedding columns {not_numbers[:10]} are not numbers (dtypes "
            f"{sorted({str(table[c].dtype) for c in not_numbers})}); expected float embeddings"
        )
    obs = _index_to_column(table.drop(columns=dims), str(path)) if obs_path is None else None
    with np.errstate(over="ignore"):  # a value beyond float32's range is named just after
        values = table[dims].to_numpy(dtype=np.float32)
    return values, obs, [f"column {c!r}" for c in dims]


def _read_npy(path: Path, obs_path: PathLike | None) -> tuple[np.ndarray, None, list[str]]:
    """A 2-D .npy array as float32; its obs must come from ``obs_path`` (refused without)."""
    if obs_path is None:
        raise ValueError(f"{path}: an .npy embedding needs obs_path (.parquet or .csv)")
    array = load_npy(path)
    values = _to_dense_float32(array, str(path))
    return values, None, [f"column {j}" for j in range(values.shape[1])]


def _check_finite(embeddings: np.ndarray, obs: pd.DataFrame, path: Path, names: list[str]) -> None:
    """Every embedding value finite as float32 (the token store's type), the first bad one
    named by its row (and the row's id), its column and the value."""
    finite = np.isfinite(embeddings)
    if finite.all():
        return
    row, column = (int(i) for i in np.argwhere(~finite)[0])
    ids = next((c for c in ("token_id", "obs_name") if c in obs.columns), None)
    named = f" ({ids} {str(obs[ids].iloc[row])!r})" if ids else ""
    value = embeddings[row, column]
    said = "NaN" if np.isnan(value) else f"{value} as float32 (beyond its range of +-3.4e38)"
    raise ValueError(
        f"{path}: row {row}{named}, {names[column]}: {said}; embeddings must be finite numbers "
        f"({int((~finite).any(axis=1).sum())} of {len(embeddings)} rows are not)"
    )


def read_embeddings(
    path: PathLike,
    *,
    obsm_key: str | None = None,
    obs_path: PathLike | None = None,
    embedding_columns: str | list[str] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Read an embedding matrix (float32, (n, d)) and its per-row metadata (RangeIndex).

    - ``.h5ad``: ``X`` (dense or sparse) or ``obsm[obsm_key]``; obs is ``adata.obs`` with the
      original index kept as column ``obs_name``.
    - ``.parquet``: ``embedding_columns`` (a list of names, or a name prefix such as "emb_")
      names the dimensions and every other column goes to obs. Without it: with ``obs_path``,
      every column is a dimension and must be numeric; otherwise every float column is a
      dimension (so float metadata such as QC metrics must be named via ``embedding_columns``).
    - ``.npy``: a 2-D array; ``obs_path`` (.parquet or .csv) is required.

    When ``obs_path`` is given, obs is read from it (for any input format) and must have n rows.
    Every value must be finite as float32: the first that is not is named by row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Embedding file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        embeddings, obs, names = _read_h5ad(path, obsm_key, obs_path)
    elif suffix == ".parquet":
        embeddings, obs, names = _read_parquet(path, embedding_columns, obs_path)
    elif suffix == ".npy":
        embeddings, obs, names = _read_npy(path, obs_path)
    else:
        raise ValueError(
            f"{path}: unsupported embedding format {suffix!r}; use .h5ad, .parquet, .npy"
        )

    if embeddings.shape[0] == 0:
        raise ValueError(f"{path}: no rows; expected one row per token")
    if obs is None:
        obs = _index_to_column(_read_obs_table(Path(str(obs_path))), str(obs_path))
    if len(obs) != embeddings.shape[0]:
        source = obs_path if obs_path is not None else path
        raise ValueError(
            f"{source}: obs has {len(obs)} rows but the embeddings in {path} have "
            f"{embeddings.shape[0]} rows"
        )
    _check_finite(embeddings, obs, path, names)
    logger.info("Read embeddings %s: %d x %d", path, *embeddings.shape)
    return embeddings, obs
