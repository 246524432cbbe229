"""Writing result files so that a failed job never leaves one that looks finished; reading
.npy arrays with errors that name the file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

PathLike = str | os.PathLike


def tmp_name(path: Path) -> Path:
    """A sibling temporary name that no reader mistakes for the finished file."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to, renamed onto ``path`` only if the block
    succeeds, so a crash never leaves a finished-looking file."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_frame(table: pd.DataFrame, path: PathLike) -> None:
    """A table as Parquet or CSV (by suffix), written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)


def read_results_csv(path: PathLike) -> pd.DataFrame:
    """A results table written by `write_frame`, its ``label`` column read as written: labels
    that look like numbers ("01") or missing values ("NA", "None") stay strings; an empty cell
    of any other column is missing."""
    columns = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(
        path,
        dtype={"label": str},
        keep_default_na=False,
        na_values={c: [""] for c in columns if c != "label"},
    )


NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: PathLike, mmap_mode: str | None = None) -> np.ndarray:
    """A NumPy array from an .npy file, never unpickled; a file that is not one (numpy would
    suggest unpickling it) or is damaged is refused naming it."""
    path = Path(path)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        with open(path, "rb") as handle:
            is_npy = handle.read(len(NPY_MAGIC)) == NPY_MAGIC
        if not is_npy:
            raise ValueError(
                f"{path}: not a readable .npy array (it does not start with the .npy header; "
                "expected a file written by numpy.save)"
            ) from err
        raise ValueError(f"{path}: a damaged or cut-short .npy array ({err})") from err


def npy_header(path: PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of an .npy file, from its header alone (nothing else is read); a
    file that is not one, or whose header is damaged, is refused naming it."""
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
        except ValueError as err:
            raise ValueError(
                f"{path}: not a readable .npy array (it does not start with the .npy header; "
                "expected a file written by numpy.save)"
            ) from err
        try:
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(handle)
        except (ValueError, EOFError, SyntaxError) as err:
            raise ValueError(f"{path}: a damaged .npy header ({err})") from err
    return tuple(int(n) for n in shape), dtype


class NpyRowWriter:
    """Writes an (n, ...) .npy file block of rows by block, in order, through plain file writes:
    unlike a writable memmap, the written pages are not kept mapped into the process, so its
    resident memory does not grow with the file."""

    def __init__(self, handle, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.handle, self.shape, self.dtype = handle, shape, np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": shape})
        self.rows = 0

    def write(self, block: np.ndarray) -> None:
        """Append the next rows."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != tuple(self.shape[1:]):
            raise ValueError(f"expected rows of shape {self.shape[1:]}, got {block.shape}")
        self.handle.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> None:
        """Check that every row was written."""
        if self.rows != self.shape[0]:
            raise ValueError(f"wrote {self.rows} of {self.shape[0]} rows")
