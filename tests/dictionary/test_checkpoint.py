"""The one checkpoint mechanism of the dictionaries and the MAE: resume only under the same
signature; a checkpoint of other settings is left and training starts over; an unreadable one
is moved aside, so later runs are not stuck on it."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from cellconcepts.dictionary.checkpoint import load_checkpoint, save_checkpoint
from cellconcepts.dictionary.sampling import BatchSampler

SIGNATURE = {"seed": 0, "lr": 0.001, "model": {"n_features": 8}}


def test_same_signature_resumes(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, {"step": 7, "weights": torch.arange(3.0)}, SIGNATURE)
    state = load_checkpoint(path, dict(SIGNATURE))
    assert state["step"] == 7 and torch.equal(state["weights"], torch.arange(3.0))


def test_other_signature_starts_over_and_names_the_change(tmp_path: Path, caplog) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 7}, SIGNATURE)
    with caplog.at_level(logging.WARNING, logger="cellconcepts.dictionary.checkpoint"):
        assert load_checkpoint(path, {**SIGNATURE, "lr": 0.01}) is None
    assert "lr" in caplog.text and "seed" not in caplog.text
    assert path.exists()  # left for the run that wrote it


def test_unreadable_checkpoint_is_moved_aside(tmp_path: Path, caplog) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="cellconcepts.dictionary.checkpoint"):
        assert load_checkpoint(path, SIGNATURE) is None
    aside = list(tmp_path.glob("last.pt.corrupt-*"))
    assert not path.exists() and len(aside) == 1
    assert str(aside[0]) in caplog.text and "weights_only" not in caplog.text
    assert load_checkpoint(path, SIGNATURE) is None  # the next run starts cleanly


def test_missing_checkpoint_is_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none.pt", SIGNATURE) is None


def test_batch_sampler_depends_on_seed_and_step_only() -> None:
    indices = [3, 5, 7, 11, 13, 17, 19]
    a = BatchSampler(indices, 3, seed=1)
    b = BatchSampler(indices, 3, seed=1)
    steps = [a.rows(s).tolist() for s in range(6)]
    assert [b.rows(s).tolist() for s in reversed(range(6))][::-1] == steps
    # 2 full batches per epoch, sorted, disjoint within an epoch, drawn from the indices
    assert all(rows == sorted(rows) for rows in steps)
    assert not set(steps[0]) & set(steps[1]) and set(steps[0]) <= set(indices)
    assert steps != [BatchSampler(indices, 3, seed=2).rows(s).tolist() for s in range(6)]


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, caplog) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 10}, SIGNATURE)
    save_checkpoint(path, {"step": 20}, SIGNATURE)
    assert (tmp_path / "last.previous.pt").exists()
    path.write_bytes(b"\x80truncated")
    with caplog.at_level(logging.WARNING, logger="cellconcepts.dictionary.checkpoint"):
        state = load_checkpoint(path, SIGNATURE)
    assert state["step"] == 10
    assert "previous checkpoint" in caplog.text
    assert len(list(tmp_path.glob("last.pt.corrupt-*"))) == 1
