"""ShuffleBuffer: seeded, resumable batches through a bounded buffer of contiguous chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellconcepts.dictionary.sampling import BatchSampler, ShuffleBuffer, prefetched
from cellconcepts.store.tokens import TokenStore, read_block, write_token_store

N, D = 1000, 3


def _store(tmp_path: Path, dtype=np.float32) -> np.ndarray:
    """A memory-mapped store whose row r holds (r, r, r), so data can be checked against rows."""
    values = np.repeat(np.arange(N, dtype=np.float64)[:, None], D, axis=1).astype(dtype)
    obs = pd.DataFrame(
        {
            "token_id": [f"t{i}" for i in range(N)],
            "is_control": np.arange(N) % 10 == 0,
            "split": np.where(np.arange(N) % 4 == 0, "test", "train"),
        }
    )
    write_token_store(tmp_path / "store", values, obs)
    return TokenStore.open(tmp_path / "store").tokens


def _train_rows() -> np.ndarray:
    return np.flatnonzero(np.arange(N) % 4 != 0)  # 750 rows


def test_read_block_reads_a_range_without_the_mapping(tmp_path: Path) -> None:
    tokens = _store(tmp_path, np.float16)
    assert isinstance(tokens, np.memmap)
    block = read_block(tokens, 17, 40)
    assert block.dtype == np.float32 and block.flags.writeable
    np.testing.assert_array_equal(block, np.asarray(tokens[17:40], dtype=np.float32))
    np.testing.assert_array_equal(read_block(np.asarray(tokens), 990, 1000)[:, 0], range(990, 1000))


def test_a_training_set_that_fits_gives_the_batch_samplers_batches(tmp_path: Path) -> None:
    tokens = _store(tmp_path)
    rows = _train_rows()
    buffer = ShuffleBuffer(tokens, rows, 64, seed=3, buffer_rows=1000, chunk_rows=100)
    sampler = BatchSampler(rows, 64, seed=3)
    for step in range(40):  # 11 batches per epoch: several epochs
        got_rows, data = buffer.batch(step)
        np.testing.assert_array_equal(got_rows, sampler.rows(step))
        np.testing.assert_array_equal(data[:, 0], got_rows)


def test_a_larger_store_is_read_through_the_buffer(tmp_path: Path) -> None:
    tokens = _store(tmp_path)
    rows = _train_rows()
    buffer = ShuffleBuffer(tokens, rows, 32, seed=0, buffer_rows=300, chunk_rows=100)
    assert not buffer.single and buffer.chunks_per_window == 3
    # 10 chunks of 75 training rows; windows of 3, 3, 3, 1 chunks: 7 + 7 + 7 + 2 batches
    assert buffer._steps(0).tolist() == [7, 14, 21, 23]
    seen, held = [], 0
    for step in range(23):
        got_rows, data = buffer.batch(step)
        assert len(got_rows) == 32 and np.all(np.diff(got_rows) > 0)
        np.testing.assert_array_equal(data[:, 0], got_rows)  # the data of those rows
        seen.extend(got_rows.tolist())
        held = max(held, len(buffer._window.rows))
        if step < 21:  # from a window of 3 chunks: rows of more than one chunk
            assert len(np.unique(got_rows // 100)) > 1
    assert held <= 300  # never more than buffer_rows in memory
    # one epoch: every training row at most once; only partial batches' rows left out
    assert len(seen) == len(set(seen)) == 23 * 32 and set(seen) <= set(rows.tolist())
    assert buffer._locate(23) == (1, 0, 0)  # the next epoch starts


def test_batches_depend_on_seed_and_step_only(tmp_path: Path) -> None:
    tokens = _store(tmp_path)
    rows = _train_rows()

    def make(seed: int) -> ShuffleBuffer:
        return ShuffleBuffer(tokens, rows, 32, seed=seed, buffer_rows=300, chunk_rows=100)

    forward = make(1)
    steps = [forward.batch(s)[0].tolist() for s in range(60)]  # into the third epoch
    resumed = make(1)  # a resumed run asks for step 45 first
    assert resumed.batch(45)[0].tolist() == steps[45]
    assert [resumed.batch(s)[0].tolist() for s in reversed(range(60))][::-1] == steps
    assert steps != [make(2).batch(s)[0].tolist() for s in range(60)]
    # epochs differ: chunks are reordered and reshuffled
    assert steps[:23] != steps[23:46]


def test_batches_read_in_the_background_are_the_direct_ones(tmp_path: Path) -> None:
    tokens = _store(tmp_path)

    def make() -> ShuffleBuffer:
        return ShuffleBuffer(tokens, _train_rows(), 32, seed=3, buffer_rows=300, chunk_rows=100)

    direct = make()
    expected = [(s, direct.batch(s)) for s in range(5, 60)]
    for background in (True, False):
        got = list(prefetched(make().batch, 5, 60, background))
        assert [s for s, _ in got] == [s for s, _ in expected]
        for (_, (rows, data)), (_, (want_rows, want_data)) in zip(got, expected, strict=True):
            np.testing.assert_array_equal(rows, want_rows)
            np.testing.assert_array_equal(data, want_data)
    assert list(prefetched(make().batch, 7, 7)) == []


@pytest.mark.parametrize("buffer_rows", [1000, 300])
def test_a_transform_is_applied_to_rows_as_they_are_read(tmp_path: Path, buffer_rows: int) -> None:
    tokens = _store(tmp_path)
    calls: list[int] = []

    def transform(x: np.ndarray) -> np.ndarray:  # row-wise, and changes the width
        calls.append(len(x))
        return np.concatenate([x * 2 + 1, -x[:, :1]], axis=1)

    def make(**kw) -> ShuffleBuffer:
        return ShuffleBuffer(tokens, _train_rows(), 32, 5, buffer_rows=buffer_rows, **kw)

    plain, mapped = make(chunk_rows=100), make(chunk_rows=100, transform=transform)
    for step in range(60):  # into the third epoch
        rows, data = plain.batch(step)
        got_rows, got = mapped.batch(step)
        np.testing.assert_array_equal(got_rows, rows)
        np.testing.assert_array_equal(got, np.concatenate([data * 2 + 1, -data[:, :1]], axis=1))
    assert set(calls) == {75}  # chunk by chunk: 75 training rows in each chunk of 100
    if buffer_rows == 1000:  # all 750 training rows fit: read and transformed once per run
        assert len(calls) == 10
    else:  # once per buffer load: two whole epochs, then two windows of 3 x 75 rows
        assert sum(calls) == 750 * 2 + 2 * 225


def test_chunks_larger_than_the_buffer_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_rows must be in"):
        ShuffleBuffer(_store(tmp_path), _train_rows(), 32, 0, buffer_rows=50, chunk_rows=100)
