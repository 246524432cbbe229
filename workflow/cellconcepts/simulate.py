"""Synthetic superposition embeddings with a known sparse dictionary (the demo's ground truth).

A stand-in for foundation-model embeddings of a perturbation screen. Every token is

    x_i = sum_m c_im a_m  +  sum_q g_iq u_q  +  noise_i

with more unit atoms ``a_m`` than dimensions (superposition), sparse non-negative codes ``c``,
a few dense, dominant nuisance directions ``u_q`` (batch effects, present in controls and
perturbed tokens alike: what control whitening should remove) and isotropic noise.

Atom roles, in index order:

* ``perturbation``: ``atoms_per_perturbation`` atoms owned by each perturbation ``P000``...;
  each is active in a perturbed token with probability ``penetrance`` (partial penetrance, as in
  CRISPR screens), with amplitude ``U(0.5, 1.5)`` times a per-perturbation strength
  ``U(0.6, 1.4)``. Never active in controls or tokens of other perturbations.
* ``cell_type``: one atom per cell type, always active in tokens of that type, ``U(0.5, 1.5)``.
* ``background``: generic cell states, each active at random in every token (controls included)
  with probability ``background_rate``, amplitude ``U(0.5, 1.5)``.

Atoms are Gaussian directions normalised to unit length; an atom whose absolute cosine with an
earlier atom exceeds ``max_coherence`` is re-drawn (a bounded number of rounds, then a warning),
so that every atom is identifiable and recovery at cosine 0.9 is a well-posed target.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.io import atomic_path

log = logging.getLogger(__name__)

ROLES = ("perturbation", "cell_type", "background")
CONTROL_LABEL = "control"
AMPLITUDE_RANGE = (0.5, 1.5)
STRENGTH_RANGE = (0.6, 1.4)
MAX_REDRAW_ROUNDS = 1000

ATOMS_FILE = "atoms.npy"
ATOM_TABLE_FILE = "atom_table.csv"
NUISANCE_FILE = "nuisance.npy"
CODES_FILE = "codes.npz"


@dataclass
class SuperpositionData:
    """Simulated tokens plus every ingredient needed to rebuild them exactly.

    ``tokens`` equals ``codes @ atoms + nuisance_coefficients @ nuisance + noise`` (computed in
    float64 from the stored arrays, then rounded to float32).
    """

    tokens: np.ndarray  # (n, d) float32
    obs: pd.DataFrame  # token_id, is_control, split, perturbation, cell_type, batch
    atoms: np.ndarray  # (A, d) float64, unit rows: the true dictionary
    atom_table: pd.DataFrame  # atom, role, label
    nuisance: np.ndarray  # (q, d) float64, orthonormal unit rows
    codes: sp.csr_matrix  # (n, A) float32, non-negative
    nuisance_coefficients: np.ndarray  # (n, q) float32
    noise: np.ndarray  # (n, d) float32
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])


def _label(prefix: str, i: int, width: int) -> str:
    return f"{prefix}{i:0{width}d}"


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n - 1, 0))))


def _validate(
    *,
    n_tokens: int,
    n_dims: int,
    n_atoms: int,
    n_perturbations: int,
    atoms_per_perturbation: int,
    n_cell_types: int,
    n_batches: int,
    n_nuisance: int,
    nuisance_scale: float,
    background_rate: float,
    control_fraction: float,
    penetrance: float,
    noise_scale: float,
    test_batches: int,
    **_: Any,
) -> None:
    positive = {
        "n_tokens": n_tokens,
        "n_dims": n_dims,
        "n_atoms": n_atoms,
        "n_perturbations": n_perturbations,
        "atoms_per_perturbation": atoms_per_perturbation,
        "n_cell_types": n_cell_types,
        "n_batches": n_batches,
    }
    for name, value in positive.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in {"n_nuisance": n_nuisance, "test_batches": test_batches}.items():
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if n_nuisance > n_dims:
        raise ValueError(f"n_nuisance ({n_nuisance}) must be at most n_dims ({n_dims})")
    n_structured = n_perturbations * atoms_per_perturbation + n_cell_types
    if n_atoms < n_structured:
        raise ValueError(
            f"n_atoms ({n_atoms}) is too small: need at least n_perturbations * "
            f"atoms_per_perturbation + n_cell_types = {n_perturbations} * "
            f"{atoms_per_perturbation} + {n_cell_types} = {n_structured}"
        )
    if test_batches >= n_batches:
        raise ValueError(
            f"test_batches ({test_batches}) must be smaller than n_batches ({n_batches}) "
            "so that some batches are left for training"
        )
    if not 0.0 < control_fraction < 1.0:
        raise ValueError(f"control_fraction must be in (0, 1), got {control_fraction!r}")
    for name, value in {"penetrance": penetrance, "background_rate": background_rate}.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    for name, value in {"nuisance_scale": nuisance_scale, "noise_scale": noise_scale}.items():
        if not value >= 0.0:
            raise ValueError(f"{name} must be non-negative, got {value!r}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_atoms(
    n_atoms: int, n_dims: int, rng: np.random.Generator, max_coherence: float | None = 0.6
) -> np.ndarray:
    """Draw ``n_atoms`` unit vectors in R^n_dims, re-drawing atoms too close to an earlier one.

    Each round re-draws the later atom of every pair with ``|cos| > max_coherence``. Gives up
    (with a warning) after a fixed number of rounds, e.g. when ``n_atoms`` is far above what
    ``n_dims`` can hold at that coherence. ``max_coherence=None`` disables re-drawing.
    """
    atoms = _unit_rows(rng.standard_normal((n_atoms, n_dims)))
    if max_coherence is None:
        return atoms
    for _ in range(MAX_REDRAW_ROUNDS):
        gram = np.abs(np.triu(atoms @ atoms.T, k=1))
        offending = np.flatnonzero((gram > max_coherence).any(axis=0))
        if offending.size == 0:
            return atoms
        atoms[offending] = _unit_rows(rng.standard_normal((offending.size, n_dims)))
    coherence = float(np.abs(np.triu(atoms @ atoms.T, k=1)).max())
    log.warning(
        "could not bring the max |cosine| between %d atoms in %d dims below %.2f "
        "after %d rounds (now %.3f); keeping them",
        n_atoms,
        n_dims,
        max_coherence,
        MAX_REDRAW_ROUNDS,
        coherence,
    )
    return atoms


def _balanced_assignment(n: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Group index per item: group sizes differ by at most one, order random."""
    return rng.permutation(np.arange(n) % n_groups)


def simulate_superposition(
    *,
    n_tokens: int = 20000,
    n_dims: int = 64,
    n_atoms: int = 128,
    n_perturbations: int = 40,
    atoms_per_perturbation: int = 2,
    n_cell_types: int = 4,
    n_batches: int = 8,
    n_nuisance: int = 3,
    nuisance_scale: float = 3.0,
    background_rate: float = 0.04,
    control_fraction: float = 0.2,
    penetrance: float = 0.8,
    noise_scale: float = 0.3,
    test_batches: int = 2,
    max_coherence: float | None = 0.6,
    seed: int = 0,
) -> SuperpositionData:
    """Simulate a perturbation screen's embeddings with a known sparse dictionary.

    Controls are ``round(control_fraction * n_tokens)`` random tokens; perturbed tokens are spread
    evenly over perturbations, cell types and batches evenly over all tokens, in random order.
    Tokens of the last ``test_batches`` batches form the ``test`` split. Nuisance coefficients are
    a per-batch offset ``N(0, nuisance_scale^2)`` plus a per-token ``N(0, (nuisance_scale/2)^2)``
    on orthonormal directions; noise is ``N(0, noise_scale^2 / n_dims)`` per dimension.
    """
    params = {
        "n_tokens": n_tokens,
        "n_dims": n_dims,
        "n_atoms": n_atoms,
        "n_perturbations": n_perturbations,
        "atoms_per_perturbation": atoms_per_perturbation,
        "n_cell_types": n_cell_types,
        "n_batches": n_batches,
        "n_nuisance": n_nuisance,
        "nuisance_scale": nuisance_scale,
        "background_rate": background_rate,
        "control_fraction": control_fraction,
        "penetrance": penetrance,
        "noise_scale": noise_scale,
        "test_batches": test_batches,
        "max_coherence": max_coherence,
        "seed": seed,
    }
    _validate(**params)
    rng = np.random.default_rng(seed)
    n, d = n_tokens, n_dims
    n_pert_atoms = n_perturbations * atoms_per_perturbation
    n_background = n_atoms - n_pert_atoms - n_cell_types
    ct_offset = n_pert_atoms
    bg_offset = n_pert_atoms + n_cell_types

    # Dictionary and nuisance directions.
    atoms = random_atoms(n_atoms, d, rng, max_coherence)
    if n_nuisance > 0:
        q_mat, _ = np.linalg.qr(rng.standard_normal((d, n_nuisance)))
        nuisance = np.ascontiguousarray(q_mat.T)
    else:
        nuisance = np.zeros((0, d))

    pert_width = _width(n_perturbations, 3)
    ct_width = _width(n_cell_types, 2)
    pert_labels = np.array([_label("P", p, pert_width) for p in range(n_perturbations)])
    ct_labels = np.array([_label("CT", c, ct_width) for c in range(n_cell_types)])
    batch_labels = np.array([_label("batch", b, _width(n_batches, 2)) for b in range(n_batches)])
    atom_table = pd.DataFrame(
        {
            "atom": np.arange(n_atoms),
            "role": ["perturbation"] * n_pert_atoms
            + ["cell_type"] * n_cell_types
            + ["background"] * n_background,
            "label": list(np.repeat(pert_labels, atoms_per_perturbation))
            + list(ct_labels)
            + [_label("BG", j, _width(n_background, 3)) for j in range(n_background)],
        }
    )

    # Labels: -1 marks a control.
    n_controls = int(round(control_fraction * n))
    n_perturbed = n - n_controls
    perturbation = rng.permutation(
        np.concatenate([np.full(n_controls, -1), np.arange(n_perturbed) % n_perturbations])
    )
    cell_type = _balanced_assignment(n, n_cell_types, rng)
    batch = _balanced_assignment(n, n_batches, rng)
    is_control = perturbation < 0
    split = np.where(batch >= n_batches - test_batches, "test", "train")

    # Codes, assembled as COO triplets per role.
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    rows.append(np.arange(n))
    cols.append(ct_offset + cell_type)
    vals.append(rng.uniform(*AMPLITUDE_RANGE, size=n))

    strength = rng.uniform(*STRENGTH_RANGE, size=n_perturbations)
    perturbed = np.flatnonzero(~is_control)
    active = rng.random((perturbed.size, atoms_per_perturbation)) < penetrance
    amplitude = rng.uniform(*AMPLITUDE_RANGE, size=active.shape)
    amplitude *= strength[perturbation[perturbed]][:, None]
    own_atoms = (
        perturbation[perturbed][:, None] * atoms_per_perturbation
        + np.arange(atoms_per_perturbation)[None, :]
    )
    r, k = np.nonzero(active)
    rows.append(perturbed[r])
    cols.append(own_atoms[r, k])
    vals.append(amplitude[r, k])

    bg_active = rng.random((n, n_background)) < background_rate
    bg_amplitude = rng.uniform(*AMPLITUDE_RANGE, size=(n, n_background))
    r, k = np.nonzero(bg_active)
    rows.append(r)
    cols.append(bg_offset + k)
    vals.append(bg_amplitude[r, k])

    codes = sp.csr_matrix(
        (
            np.concatenate(vals).astype(np.float32),
            (np.concatenate(rows), np.concatenate(cols)),
        ),
        shape=(n, n_atoms),
    )
    codes.sort_indices()

    batch_offset = rng.normal(0.0, nuisance_scale, size=(n_batches, n_nuisance))
    token_jitter = rng.normal(0.0, nuisance_scale / 2.0, size=(n, n_nuisance))
    nuisance_coefficients = (batch_offset[batch] + token_jitter).astype(np.float32)
    noise = rng.normal(0.0, noise_scale / np.sqrt(d), size=(n, d)).astype(np.float32)

    tokens = np.asarray(codes.astype(np.float64) @ atoms)
    tokens += nuisance_coefficients.astype(np.float64) @ nuisance
    tokens += noise
    tokens = tokens.astype(np.float32)

    obs = pd.DataFrame(
        {
            "token_id": [_label("tok", i, _width(n, 6)) for i in range(n)],
            "is_control": is_control,
            "split": split,
            "perturbation": np.where(
                is_control, CONTROL_LABEL, pert_labels[np.maximum(perturbation, 0)]
            ),
            "cell_type": ct_labels[cell_type],
            "batch": batch_labels[batch],
        }
    )
    for column in ("token_id", "split", "perturbation", "cell_type", "batch"):
        obs[column] = obs[column].astype(object)

    log.info(
        "simulated %d tokens in %d dims from %d atoms (%d perturbation, %d cell type, "
        "%d background); %d controls; mean active atoms per token %.2f",
        n,
        d,
        n_atoms,
        n_pert_atoms,
        n_cell_types,
        n_background,
        n_controls,
        codes.nnz / n,
    )
    return SuperpositionData(
        tokens=tokens,
        obs=obs,
        atoms=atoms,
        atom_table=atom_table,
        nuisance=nuisance,
        codes=codes,
        nuisance_coefficients=nuisance_coefficients,
        noise=noise,
        params=params,
    )


def write_ground_truth(
    data: SuperpositionData, directory: str | os.PathLike[str], *, include_codes: bool = False
) -> dict[str, Path]:
    """Write ``atoms.npy`` (A, d), ``atom_table.csv`` (atom, role, label), ``nuisance.npy`` (q, d).

    With ``include_codes`` also ``codes.npz`` (scipy sparse, (n, A)). Returns the paths written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "atoms": directory / ATOMS_FILE,
        "atom_table": directory / ATOM_TABLE_FILE,
        "nuisance": directory / NUISANCE_FILE,
    }

    for key, array in (("atoms", data.atoms), ("nuisance", data.nuisance)):
        with atomic_path(paths[key]) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
    with atomic_path(paths["atom_table"]) as tmp:
        data.atom_table.to_csv(tmp, index=False)
    if include_codes:
        paths["codes"] = directory / CODES_FILE
        with atomic_path(paths["codes"]) as tmp, open(tmp, "wb") as handle:
            sp.save_npz(handle, data.codes)
    return paths
