"""Token stores, the contract between the stages: open, write, and read in batches.

A token store is two files (`layout.TokenFiles`): ``tokens.npy`` (float16 or float32, shape
(n, d), opened memory-mapped so nothing assumes the store fits in RAM) and ``obs.parquet`` (one
row per token, same order) with at least the columns ``token_id``, ``is_control`` and ``split``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from cellconcepts.files import load_npy, tmp_name
from cellconcepts.store.layout import PathLike, TokenFiles
from cellconcepts.store.obs import check_split_values, parse_flags

logger = logging.getLogger(__name__)

REQUIRED_OBS_COLUMNS = ("token_id", "is_control", "split")
TOKEN_DTYPES = ("float16", "float32")

# Rows per chunk when copying or checking tokens, so large stores are never held twice in RAM.
_CHUNK_ROWS = 65536


@dataclass
class TokenStore:
    """An opened token store: memory-mapped tokens plus their per-token metadata."""

    files: TokenFiles
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
    def open(cls, store: TokenFiles | PathLike, columns: Sequence[str] | None = None) -> TokenStore:
        """Open a store read-only (its files, or the directory holding them), checking that
        files, shapes and required columns agree. ``columns``: read only these obs columns
        (a job that needs one column of a store of millions of tokens keeps a few bytes per
        token in memory instead of every annotation)."""
        files = TokenFiles.of(store)
        if not isinstance(store, TokenFiles) and not Path(store).is_dir():
            raise FileNotFoundError(f"Token store directory not found: {store}")
        for required in (files.tokens, files.obs):
            if not required.is_file():
                raise FileNotFoundError(
                    f"Token store is incomplete: missing file {required.name} ({required})"
                )
        tokens = load_npy(files.tokens, mmap_mode="r")
        if tokens.ndim != 2:
            raise ValueError(
                f"{files.tokens}: expected a 2-D array (n_tokens, dim), got shape {tokens.shape}"
            )
        if tokens.dtype.name not in TOKEN_DTYPES:
            raise ValueError(
                f"{files.tokens}: expected dtype float16 or float32, got {tokens.dtype}"
            )
        schema = pq.read_schema(files.obs)
        missing = [c for c in (*REQUIRED_OBS_COLUMNS, *(columns or ())) if c not in schema.names]
        if missing:
            raise ValueError(
                f"{files.obs}: missing required column(s) {missing}; "
                f"expected at least {list(REQUIRED_OBS_COLUMNS)}, found {schema.names}"
            )
        obs = pd.read_parquet(files.obs, columns=None if columns is None else list(columns))
        if len(obs) != tokens.shape[0]:
            raise ValueError(
                f"Token store: {files.obs} has {len(obs)} rows but {files.tokens} has "
                f"{tokens.shape[0]} tokens; they must match row for row"
            )
        obs = obs.reset_index(drop=True)
        return cls(files=files, tokens=tokens, obs=obs)


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

    obs["is_control"] = parse_flags(obs["is_control"], f"{where}: column 'is_control'")
    split = obs["split"]
    check_split_values(split, f"{where}: column 'split'")
    obs["split"] = split.astype(str)
    return obs


def write_token_store(
    store: TokenFiles | PathLike,
    tokens: np.ndarray,
    obs: pd.DataFrame,
    dtype: str = "float32",
) -> TokenStore:
    """Validate and write a token store (to its files, or a directory), returning it opened
    (memory-mapped).

    Tokens are copied in chunks (``tokens`` may itself be a memmap) and checked to be finite after
    the cast to ``dtype``, so a float16 overflow is reported too. Both files are written under
    temporary names and renamed into place, the obs table last, so a crash never leaves a
    finished-looking store.
    """
    files = TokenFiles.of(store)
    where = files.tokens.parent
    if dtype not in TOKEN_DTYPES:
        raise ValueError(f"{where}: dtype must be one of {list(TOKEN_DTYPES)}, got {dtype!r}")
    if tokens.ndim != 2:
        raise ValueError(
            f"{where}: tokens must be a 2-D array (n_tokens, dim), got shape {tokens.shape}"
        )
    n, d = tokens.shape
    obs = _validate_obs(obs, n, str(where))

    for folder in {files.tokens.parent, files.obs.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    tmp_tokens = tmp_name(files.tokens)
    tmp_obs = tmp_name(files.obs)
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
                    f"{where}: tokens must be finite (as {dtype}); row {row} "
                    f"(token_id {obs['token_id'].iloc[row]!r}) has NaN or inf"
                )
            out[start:stop] = chunk
        out.flush()
        del out
        pq.write_table(pa.Table.from_pandas(obs, preserve_index=False), tmp_obs)
        os.replace(tmp_tokens, files.tokens)
        os.replace(tmp_obs, files.obs)
    finally:
        for tmp in (tmp_tokens, tmp_obs):
            tmp.unlink(missing_ok=True)
    logger.info("Wrote token store %s: %d tokens x %d dims (%s)", where, n, d, dtype)
    return TokenStore.open(files)


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


def read_block(tokens: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` as a float32 copy. From a memory-mapped store they are read with one
    plain file read, not through the mapping, so the pages do not stay mapped into the process
    and its resident memory does not grow with the store."""
    if isinstance(tokens, np.memmap) and tokens.filename is not None and tokens.ndim == 2:
        row_bytes = tokens.shape[1] * tokens.dtype.itemsize
        count = (stop - start) * tokens.shape[1]
        block = np.fromfile(
            tokens.filename,
            dtype=tokens.dtype,
            count=count,
            offset=tokens.offset + start * row_bytes,
        )
        return block.reshape(stop - start, tokens.shape[1]).astype(np.float32, copy=False)
    return np.array(tokens[start:stop], dtype=np.float32)


def _read_rows(tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Read ``rows`` as float32, touching the (memory-mapped) array in ascending row order."""
    if rows.size == 0:
        return np.empty((0, tokens.shape[1]), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    if sorted_rows[-1] - sorted_rows[0] == rows.size - 1 and np.all(np.diff(sorted_rows) == 1):
        data = read_block(tokens, int(sorted_rows[0]), int(sorted_rows[-1]) + 1)
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
