"""Seeded, resumable mini-batches: the rows of training step s depend only on (seed, s)."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


class BatchSampler:
    """Rows for step s: epoch = s // steps_per_epoch of
    ``default_rng([seed, epoch]).permutation(indices)``; the last partial batch of an epoch is
    dropped, and each batch is sorted so that a memory-mapped array is read in order."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int) -> None:
        self.indices = np.asarray(indices)
        self.batch_size = min(batch_size, len(self.indices))
        if self.batch_size < batch_size:
            log.warning(
                "only %d training rows, fewer than batch_size %d: every batch is the whole set",
                len(self.indices),
                batch_size,
            )
        self.steps_per_epoch = len(self.indices) // self.batch_size
        self.seed = seed
        self._epoch = -1
        self._perm = self.indices

    def rows(self, step: int) -> np.ndarray:
        """The sorted row indices of training step ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.indices)
            self._epoch = epoch
        start = position * self.batch_size
        return np.sort(self._perm[start : start + self.batch_size])
