"""Atom recovery on data with a known dictionary: does each true atom have a learned direction
with |cosine| at least a threshold?"""

from __future__ import annotations

import numpy as np
import pandas as pd


def atom_recovery(
    true_atoms: np.ndarray, learned_directions: np.ndarray, threshold: float = 0.9
) -> pd.DataFrame:
    """For each true atom, the learned direction with the largest |cosine| and whether it is at
    least ``threshold``.

    true_atoms: (A, d) rows; learned_directions: (d, M) columns, both in the original space.
    Absolute cosine because ICFL codes are signed. Zero atoms/columns have cosine 0.
    """
    atoms = np.asarray(true_atoms, dtype=np.float64)
    learned = np.asarray(learned_directions, dtype=np.float64)
    if atoms.ndim != 2 or learned.ndim != 2:
        raise ValueError(
            f"true_atoms (A, d) and learned_directions (d, M) must be 2-D, got "
            f"{atoms.shape} and {learned.shape}"
        )
    if atoms.shape[1] != learned.shape[0]:
        raise ValueError(
            f"true_atoms has dimension {atoms.shape[1]} but learned_directions has "
            f"{learned.shape[0]} rows; expected learned_directions as (d, M) columns"
        )
    atom_norm = np.linalg.norm(atoms, axis=1, keepdims=True)
    learned_norm = np.linalg.norm(learned, axis=0, keepdims=True)
    atoms_unit = np.divide(atoms, atom_norm, out=np.zeros_like(atoms), where=atom_norm > 0)
    learned_unit = np.divide(
        learned, learned_norm, out=np.zeros_like(learned), where=learned_norm > 0
    )
    n_atoms = atoms.shape[0]
    if learned.shape[1] == 0:
        best_feature = np.full(n_atoms, -1, dtype=np.int64)
        best_cos = np.zeros(n_atoms)
    else:
        cos = np.abs(atoms_unit @ learned_unit)
        best_feature = np.argmax(cos, axis=1).astype(np.int64)
        best_cos = np.clip(cos[np.arange(n_atoms), best_feature], 0.0, 1.0)
    return pd.DataFrame(
        {
            "atom": np.arange(n_atoms, dtype=np.int64),
            "best_abs_cosine": best_cos,
            "best_feature": best_feature,
            "recovered": best_cos >= threshold,
        }
    )
