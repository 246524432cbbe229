"""Token stores (the contract between pipeline stages) and embedding readers.

A token store is a directory holding ``tokens.npy`` (float16 or float32, shape (n, d), opened
memory-mapped so nothing assumes the store fits in RAM) and ``obs.parquet`` (one row per token,
same order) with at least the columns ``token_id``, ``is_control`` and ``split``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

TOKENS_FILE = "tokens.npy"
OBS_FILE = "obs.parquet"
REQUIRED_OBS_COLUMNS = ("token_id", "is_control", "split")
SPLIT_VALUES = ("train", "test")
TOKEN_DTYPES = ("float16", "float32")

# Rows per chunk when copying or checking tokens, so large stores are never held twice in RAM.
_CHUNK_ROWS = 65536


@dataclass
class TokenStore:
    """An opened token store: memory-mapped tokens plus their per-token metadata."""

    path: Path
    tokens: np.ndarray
    obs: pd.DataFrame

    @property
    def n_tokens(self) -> int:
        """Number of tokens (rows)."""
        return int(self.tokens.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension (columns)."""
        return int(self.tokens.shape[1])

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenStore:
        """Open a store read-only, checking that files, shapes and required columns agree."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"Token store directory not found: {path}")
        tokens_path = path / TOKENS_FILE
        obs_path = path / OBS_FILE
        for required in (tokens_path, obs_path):
            if not required.is_file():
                raise FileNotFoundError(
                    f"Token store {path} is incomplete: missing file {required.name} ({required})"
                )
        try:
            tokens = np.load(tokens_path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{tokens_path}: not a readable .npy array ({err})") from err
        if tokens.ndim != 2:
            raise ValueError(
                f"{tokens_path}: expected a 2-D array (n_tokens, dim), got shape {tokens.shape}"
            )
        if tokens.dtype.name not in TOKEN_DTYPES:
            raise ValueError(
                f"{tokens_path}: expected dtype float16 or float32, got {tokens.dtype}"
            )
        obs = pd.read_parquet(obs_path)
        missing = [c for c in REQUIRED_OBS_COLUMNS if c not in obs.columns]
        if missing:
            raise ValueError(
                f"{obs_path}: missing required column(s) {missing}; "
                f"expected at least {list(REQUIRED_OBS_COLUMNS)}, found {list(obs.columns)}"
            )
        if len(obs) != tokens.shape[0]:
            raise ValueError(
                f"Token store {path}: {obs_path.name} has {len(obs)} rows but "
                f"{tokens_path.name} has {tokens.shape[0]} tokens; they must match row for row"
            )
        obs = obs.reset_index(drop=True)
        return cls(path=path, tokens=tokens, obs=obs)


def _validate_obs(obs: pd.DataFrame, n_tokens: int, where: str) -> pd.DataFrame:
    """Return a normalised copy of ``obs`` (RangeIndex, str ids/splits, bool controls) or raise."""
    missing = [c for c in REQUIRED_OBS_COLUMNS if c not in obs.columns]
    if missing:
        raise ValueError(
            f"{where}: obs is missing required column(s) {missing}; "
            f"expected at least {list(REQUIRED_OBS_COLUMNS)}, found {list(obs.columns)}"
        )
    if len(obs) != n_tokens:
        raise ValueError(f"{where}: obs has {len(obs)} rows but tokens has {n_tokens} rows")
    obs = obs.reset_index(drop=True).copy()

    token_id = obs["token_id"]
    if token_id.isna().any():
        row = int(np.flatnonzero(token_id.isna().to_numpy())[0])
        raise ValueError(f"{where}: column 'token_id' has a missing value at row {row}")
    token_id = token_id.astype(str)
    duplicated = token_id.duplicated(keep=False)
    if duplicated.any():
        examples = token_id[duplicated].unique()[:5].tolist()
        raise ValueError(
            f"{where}: column 'token_id' must be unique; {int(duplicated.sum())} rows share "
            f"ids, e.g. {examples}"
        )
    obs["token_id"] = token_id

    is_control = obs["is_control"]
    if pd.api.types.is_bool_dtype(is_control) and not is_control.isna().any():
        obs["is_control"] = is_control.astype(bool)
    elif pd.api.types.is_integer_dtype(is_control) and set(is_control.unique()) <= {0, 1}:
        obs["is_control"] = is_control.astype(bool)
    else:
        raise ValueError(
            f"{where}: column 'is_control' must be boolean (True/False, no missing values), "
            f"got dtype {is_control.dtype}"
        )

    split = obs["split"]
    bad = ~split.isin(SPLIT_VALUES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{where}: column 'split' must be one of {list(SPLIT_VALUES)}; "
            f"row {row} has {split.iloc[row]!r}"
        )
    obs["split"] = split.astype(str)
    return obs


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to, renamed onto ``path`` only if the block
    succeeds, so a crash never leaves a finished-looking file."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_frame(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """A table as Parquet or CSV (by suffix), written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)


def _tmp_name(path: Path) -> Path:
    """A sibling temporary name that no reader mistakes for the finished file."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_token_store(
    path: str | os.PathLike,
    tokens: np.ndarray,
    obs: pd.DataFrame,
    dtype: str = "float32",
) -> TokenStore:
    """Validate and write a token store, returning it opened (memory-mapped).

    Tokens are copied in chunks (``tokens`` may itself be a memmap) and checked to be finite after
    the cast to ``dtype``, so a float16 overflow is reported too. Both files are written under
    temporary names and renamed into place, ``obs.parquet`` last, so a crash never leaves a
    finished-looking store.
    """
    path = Path(path)
    if dtype not in TOKEN_DTYPES:
        raise ValueError(f"{path}: dtype must be one of {list(TOKEN_DTYPES)}, got {dtype!r}")
    if tokens.ndim != 2:
        raise ValueError(
            f"{path}: tokens must be a 2-D array (n_tokens, dim), got shape {tokens.shape}"
        )
    n, d = tokens.shape
    obs = _validate_obs(obs, n, str(path))

    path.mkdir(parents=True, exist_ok=True)
    tokens_path = path / TOKENS_FILE
    obs_path = path / OBS_FILE
    tmp_tokens = _tmp_name(tokens_path)
    tmp_obs = _tmp_name(obs_path)
    try:
        out = np.lib.format.open_memmap(tmp_tokens, mode="w+", dtype=np.dtype(dtype), shape=(n, d))
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n)
            with np.errstate(over="ignore"):  # overflow to inf is reported just below
                chunk = np.asarray(tokens[start:stop]).astype(dtype, copy=False)
            finite = np.isfinite(chunk).all(axis=1)
            if not finite.all():
                row = start + int(np.flatnonzero(~finite)[0])
                raise ValueError(
                    f"{path}: tokens must be finite (as {dtype}); row {row} "
                    f"(token_id {obs['token_id'].iloc[row]!r}) has NaN or inf"
                )
            out[start:stop] = chunk
        out.flush()
        del out
        pq.write_table(pa.Table.from_pandas(obs, preserve_index=False), tmp_obs)
        os.replace(tmp_tokens, tokens_path)
        os.replace(tmp_obs, obs_path)
    finally:
        for tmp in (tmp_tokens, tmp_obs):
            tmp.unlink(missing_ok=True)
    logger.info("Wrote token store %s: %d tokens x %d dims (%s)", path, n, d, dtype)
    return TokenStore.open(path)


def _as_index_array(indices: np.ndarray | None, n: int) -> np.ndarray:
    """Turn ``None``, a boolean mask or integer indices into validated int64 row indices."""
    if indices is None:
        return np.arange(n, dtype=np.int64)
    indices = np.asarray(indices)
    if indices.dtype == bool:
        if indices.shape != (n,):
            raise ValueError(f"boolean indices must have shape ({n},), got {indices.shape}")
        return np.flatnonzero(indices).astype(np.int64)
    if indices.ndim != 1 or not (indices.size == 0 or np.issubdtype(indices.dtype, np.integer)):
        raise ValueError(
            f"indices must be a 1-D integer array or a boolean mask, "
            f"got dtype {indices.dtype} shape {indices.shape}"
        )
    indices = indices.astype(np.int64, copy=False)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(
            f"indices out of range for {n} rows: min {indices.min()}, max {indices.max()}"
        )
    return indices


def _read_rows(tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Read ``rows`` as float32, touching the (memory-mapped) array in ascending row order."""
    if rows.size == 0:
        return np.empty((0, tokens.shape[1]), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    if sorted_rows[-1] - sorted_rows[0] == rows.size - 1 and np.all(np.diff(sorted_rows) == 1):
        # np.array copies, so callers never get a read-only view into the memmap.
        data = np.array(tokens[sorted_rows[0] : sorted_rows[-1] + 1], dtype=np.float32)
    else:
        data = np.asarray(tokens[sorted_rows], dtype=np.float32)
    if np.all(order[:-1] < order[1:]):
        return np.ascontiguousarray(data)
    batch = np.empty_like(data)
    batch[order] = data
    return batch


def iter_batches(
    tokens: np.ndarray,
    batch_size: int,
    *,
    indices: np.ndarray | None = None,
    shuffle: bool = False,
    seed: int = 0,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = False,
    desc: str = "",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(row_indices, batch)`` over ``tokens`` once, ``batch`` as float32 (n_b, d).

    Rows come in ``indices`` order (all rows when ``None``; a boolean mask is accepted) or, with
    ``shuffle``, in the order of ``np.random.default_rng(seed).permutation(indices)``. Each batch
    is read from the memmap with sorted indices for locality, then returned in iteration order;
    ``transform`` is applied per batch, so the store is never copied as a whole. The last batch
    may be smaller than ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = _as_index_array(indices, tokens.shape[0])
    if shuffle:
        order = np.random.default_rng(seed).permutation(order)
    n_batches = -(-order.size // batch_size)
    disable = not progress or not sys.stderr.isatty()
    for b in tqdm(range(n_batches), desc=desc, disable=disable, leave=False):
        rows = order[b * batch_size : (b + 1) * batch_size]
        batch = _read_rows(tokens, rows)
        if transform is not None:
            batch = transform(batch)
        yield rows, batch


def _read_obs_table(obs_path: Path) -> pd.DataFrame:
    """Read per-row metadata from .parquet or .csv."""
    obs_path = Path(obs_path)
    if not obs_path.is_file():
        raise FileNotFoundError(f"obs file not found: {obs_path}")
    suffix = obs_path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(obs_path)
    if suffix == ".csv":
        return pd.read_csv(obs_path)
    raise ValueError(f"{obs_path}: obs file must be .parquet or .csv, got {suffix!r}")


def _to_dense_float32(matrix: object, where: str) -> np.ndarray:
    """Dense float32 copy of a numpy / scipy.sparse / DataFrame matrix."""
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    elif isinstance(matrix, pd.DataFrame):
        matrix = matrix.to_numpy()
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


def read_embeddings(
    path: str | os.PathLike,
    *,
    obsm_key: str | None = None,
    obs_path: str | os.PathLike | None = None,
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
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Embedding file not found: {path}")
    suffix = path.suffix.lower()
    obs: pd.DataFrame | None = None

    if suffix == ".h5ad":
        import anndata

        adata = anndata.read_h5ad(path, backed=None)
        if obsm_key is not None:
            if obsm_key not in adata.obsm:
                raise ValueError(
                    f"{path}: obsm key {obsm_key!r} not found; available keys: "
                    f"{sorted(adata.obsm.keys())}"
                )
            embeddings = _to_dense_float32(adata.obsm[obsm_key], f"{path} obsm[{obsm_key!r}]")
        else:
            if adata.X is None:
                raise ValueError(
                    f"{path}: X is empty; pass obsm_key (available: {sorted(adata.obsm.keys())})"
                )
            embeddings = _to_dense_float32(adata.X, f"{path} X")
        if obs_path is None:
            obs = _index_to_column(adata.obs, str(path))
    elif suffix == ".parquet":
        table = pd.read_parquet(path)
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
            if obs_path is None:
                obs = _index_to_column(table.drop(columns=dims), str(path))
        elif obs_path is None:
            dims = [c for c in table.columns if pd.api.types.is_float_dtype(table[c])]
            if not dims:
                raise ValueError(
                    f"{path}: no float columns found; embedding dimensions must be float columns "
                    f"(columns: {list(table.columns)})"
                )
            obs = _index_to_column(table.drop(columns=dims), str(path))
        else:
            dims = list(table.columns)
            non_numeric = [
                c
                for c in dims
                if not pd.api.types.is_numeric_dtype(table[c])
                or pd.api.types.is_bool_dtype(table[c])
            ]
            if non_numeric:
                raise ValueError(
                    f"{path}: with obs_path given, every column must be a numeric embedding "
                    f"dimension; non-numeric columns: {non_numeric}"
                )
        embeddings = table[dims].to_numpy(dtype=np.float32)
    elif suffix == ".npy":
        if obs_path is None:
            raise ValueError(f"{path}: an .npy embedding needs obs_path (.parquet or .csv)")
        embeddings = _to_dense_float32(np.load(path, allow_pickle=False), str(path))
    else:
        raise ValueError(
            f"{path}: unsupported embedding format {suffix!r}; use .h5ad, .parquet, .npy"
        )

    if obs is None:
        obs = _index_to_column(_read_obs_table(Path(str(obs_path))), str(obs_path))
    if len(obs) != embeddings.shape[0]:
        source = obs_path if obs_path is not None else path
        raise ValueError(
            f"{source}: obs has {len(obs)} rows but the embeddings in {path} have "
            f"{embeddings.shape[0]} rows"
        )
    logger.info("Read embeddings %s: %d x %d", path, *embeddings.shape)
    return embeddings, obs
