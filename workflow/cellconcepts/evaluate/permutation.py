"""Label permutations that keep the design of an experiment, for the null of a best-of-M score.

Labels are exchanged only between tokens of the same *block* (a plate, batch or other
``group_by`` group: tokens of different blocks are never exchangeable, since blocks differ in
ways the labels do not cause). Where tokens come in *units* that share their label (the sites
of one well), whole units exchange labels, so a permuted label set has the clustering of the
real one; otherwise single tokens do. Tokens without a label keep none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def codes_of(values: pd.Series | np.ndarray | None, n: int) -> np.ndarray:
    """An integer code per row of ``values`` (one per distinct value, missing values share
    one); ``None`` gives every row code 0."""
    if values is None:
        return np.zeros(n, dtype=np.int64)
    codes, _ = pd.factorize(pd.Series(values).astype(str), use_na_sentinel=False)
    if len(codes) != n:
        raise ValueError(f"expected {n} values (one per token), got {len(codes)}")
    return codes.astype(np.int64)


@dataclass(frozen=True)
class PermutationDesign:
    """Which labels may be exchanged: labelled tokens, their blocks, and the units that move
    together (`permutation_design`)."""

    label_index: np.ndarray  # (n,) label code, -1 where a token has no label
    groups: list[np.ndarray]  # per block: the members (token or unit indices) exchanged
    member_labels: np.ndarray  # (n_members,) label code of each member
    member_of_token: np.ndarray  # (n,) member index of each token, -1 where unlabelled
    by_unit: bool  # whether members are units (True) or tokens

    @property
    def n_tokens(self) -> int:
        return int(self.label_index.shape[0])


def permutation_design(
    label_index: np.ndarray, blocks: np.ndarray | None = None, units: np.ndarray | None = None
) -> PermutationDesign:
    """The exchangeable members of a labelled token set: units (``units``, one code per token)
    where every unit holds one label and lies in one block, else tokens; each exchanged only
    within its block (``blocks``, one code per token; None = one block)."""
    label_index = np.asarray(label_index, dtype=np.int64)
    n = label_index.shape[0]
    labelled = np.flatnonzero(label_index >= 0)
    blocks = np.zeros(n, dtype=np.int64) if blocks is None else np.asarray(blocks, np.int64)
    by_unit = False
    if units is not None:
        units = np.asarray(units, dtype=np.int64)
        frame = pd.DataFrame(
            {"unit": units[labelled], "label": label_index[labelled], "block": blocks[labelled]}
        )
        per_unit = frame.groupby("unit").nunique()
        by_unit = bool((per_unit["label"] == 1).all() and (per_unit["block"] == 1).all())
        if not by_unit:
            log.info(
                "permutation null: %d units hold more than one label or block; exchanging "
                "single tokens instead of whole units",
                int(((per_unit["label"] > 1) | (per_unit["block"] > 1)).sum()),
            )
    member_of_token = np.full(n, -1, dtype=np.int64)
    if by_unit:
        member_codes, first = np.unique(units[labelled], return_index=True)
        member_of_token[labelled] = np.searchsorted(member_codes, units[labelled])
        first_token = labelled[first]
    else:
        member_of_token[labelled] = np.arange(labelled.shape[0])
        first_token = labelled
    member_labels = label_index[first_token]
    member_blocks = blocks[first_token]
    order = np.argsort(member_blocks, kind="stable")
    bounds = np.flatnonzero(np.diff(member_blocks[order])) + 1
    groups = [g for g in np.split(order, bounds) if g.shape[0] > 1]
    return PermutationDesign(label_index, groups, member_labels, member_of_token, by_unit)


@numba.njit(cache=True)
def _shuffle_blocks(bounds, keys, order):
    """Fisher-Yates shuffles of the positions within each block (``bounds``: block starts and
    the end), one per row of the uniform ``keys``, written to ``order`` (rows x positions)."""
    for r in range(order.shape[0]):
        for k in range(order.shape[1]):
            order[r, k] = k
        for b in range(bounds.shape[0] - 1):
            start, stop = bounds[b], bounds[b + 1]
            for i in range(stop - 1, start, -1):
                j = start + int(keys[r, i] * (i - start + 1))
                order[r, i], order[r, j] = order[r, j], order[r, i]


def permuted_labels(
    design: PermutationDesign, n_permutations: int, seed: int, chunk: int = 64
) -> Iterator[np.ndarray]:
    """``n_permutations`` permuted label vectors, as (chunk, n) arrays of label codes (-1 for
    unlabelled tokens). Each permutation shuffles the members of every block with uniform
    keys drawn from one seeded stream in permutation order, so the nulls are the same
    whatever the chunk size and for every model scored with this seed."""
    rng = np.random.default_rng(seed)
    labelled = design.member_of_token >= 0
    members = np.concatenate(design.groups) if design.groups else np.array([], np.int64)
    bounds = np.cumsum([0, *[g.shape[0] for g in design.groups]]).astype(np.int64)
    done = 0
    while done < n_permutations:
        size = min(chunk, n_permutations - done)
        keys = rng.random((size, members.shape[0]))
        order = np.empty((size, members.shape[0]), dtype=np.int64)
        _shuffle_blocks(bounds, keys, order)
        member = np.tile(design.member_labels, (size, 1))
        member[:, members] = design.member_labels[members[order]]
        out = np.full((size, design.n_tokens), -1, dtype=np.int64)
        out[:, labelled] = member[:, design.member_of_token[labelled]]
        done += size
        yield out
