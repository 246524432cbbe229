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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellconcepts.files import PathLike, atomic_path

log = logging.getLogger(__name__)

ROLES = ("perturbation", "cell_type", "background")
CONTROL_LABEL = "control"
AMPLITUDE_RANGE = (0.5, 1.5)
STRENGTH_RANGE = (0.6, 1.4)
MAX_REDRAW_ROUNDS = 1000


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


def _nuisance_directions(n_nuisance: int, n_dims: int, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal nuisance directions (q, d): the Q factor of a Gaussian (d, q) matrix, so that
    the batch effects are independent of each other; (0, d) when there are none (no RNG draw)."""
    if n_nuisance > 0:
        q_mat, _ = np.linalg.qr(rng.standard_normal((n_dims, n_nuisance)))
        return np.ascontiguousarray(q_mat.T)
    return np.zeros((0, n_dims))


def _names(prefix: str, n: int, minimum_width: int) -> np.ndarray:
    """``prefix`` + zero-padded index for 0..n-1 (P000, CT00, ...), as an array to index into."""
    width = _width(n, minimum_width)
    return np.array([_label(prefix, i, width) for i in range(n)])


def _atom_table(
    n_atoms: int,
    pert_labels: np.ndarray,
    atoms_per_perturbation: int,
    ct_labels: np.ndarray,
    n_background: int,
) -> pd.DataFrame:
    """Role and label of every atom, in index order: each perturbation's atoms, one atom per cell
    type, then the background atoms (BG000...)."""
    n_pert_atoms = len(pert_labels) * atoms_per_perturbation
    n_cell_types = len(ct_labels)
    return pd.DataFrame(
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


def _perturbation_per_token(
    n: int, n_controls: int, n_perturbations: int, rng: np.random.Generator
) -> np.ndarray:
    """Perturbation index per token, -1 for a control: ``n_controls`` controls and the others
    spread evenly over the perturbations, in random order."""
    n_perturbed = n - n_controls
    return rng.permutation(
        np.concatenate([np.full(n_controls, -1), np.arange(n_perturbed) % n_perturbations])
    )


_Entries = tuple[np.ndarray, np.ndarray, np.ndarray]  # COO (rows, cols, values) of some codes


def _cell_type_entries(
    n: int, cell_type: np.ndarray, offset: int, rng: np.random.Generator
) -> _Entries:
    """Codes of the cell-type atoms: every token's own type atom, amplitude U(0.5, 1.5)."""
    return np.arange(n), offset + cell_type, rng.uniform(*AMPLITUDE_RANGE, size=n)


def _perturbation_entries(
    perturbation: np.ndarray,
    n_perturbations: int,
    atoms_per_perturbation: int,
    penetrance: float,
    rng: np.random.Generator,
) -> _Entries:
    """Codes of the perturbation atoms: each atom of a perturbed token's own perturbation is
    active with probability ``penetrance``, amplitude U(0.5, 1.5) x the perturbation's strength.

    The perturbation atoms come first in the dictionary (offset 0).
    """
    strength = rng.uniform(*STRENGTH_RANGE, size=n_perturbations)
    perturbed = np.flatnonzero(perturbation >= 0)
    active = rng.random((perturbed.size, atoms_per_perturbation)) < penetrance
    amplitude = rng.uniform(*AMPLITUDE_RANGE, size=active.shape)
    amplitude *= strength[perturbation[perturbed]][:, None]
    own_atoms = (
        perturbation[perturbed][:, None] * atoms_per_perturbation
        + np.arange(atoms_per_perturbation)[None, :]
    )
    r, k = np.nonzero(active)
    return perturbed[r], own_atoms[r, k], amplitude[r, k]


def _background_entries(
    n: int, n_background: int, offset: int, background_rate: float, rng: np.random.Generator
) -> _Entries:
    """Codes of the background atoms: each active in any token (controls included) with
    probability ``background_rate``, amplitude U(0.5, 1.5)."""
    # Drawn in row blocks (identical to one (n, n_background) draw: a Generator fills arrays
    # in order), so that millions of tokens x thousands of atoms never sit in memory at once.
    rows, atoms = [], []
    for start, stop in _row_blocks(n, n_background):
        r, k = np.nonzero(rng.random((stop - start, n_background)) < background_rate)
        rows.append(start + r)
        atoms.append(k)
    r, k = np.concatenate(rows), np.concatenate(atoms)
    amplitude = np.empty(len(r))
    for start, stop in _row_blocks(n, n_background):
        block = rng.uniform(*AMPLITUDE_RANGE, size=(stop - start, n_background))
        inside = slice(*np.searchsorted(r, [start, stop]))
        amplitude[inside] = block[r[inside] - start, k[inside]]
    return r, offset + k, amplitude


def _row_blocks(n: int, width: int, values: int = 1 << 24) -> list[tuple[int, int]]:
    """(start, stop) row ranges of about ``values`` values each (128 MiB of float64)."""
    step = max(1, values // max(width, 1))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _codes_matrix(entries: list[_Entries], n: int, n_atoms: int) -> sp.csr_matrix:
    """The (n, A) float32 CSR code matrix (sorted indices) from the per-role COO entries."""
    rows, cols, vals = zip(*entries, strict=True)
    codes = sp.csr_matrix(
        (
            np.concatenate(vals).astype(np.float32),
            (np.concatenate(rows), np.concatenate(cols)),
        ),
        shape=(n, n_atoms),
    )
    codes.sort_indices()
    return codes


def _nuisance_coefficients(
    n: int,
    batch: np.ndarray,
    n_batches: int,
    n_nuisance: int,
    nuisance_scale: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-token nuisance coefficients (n, q) float32: a per-batch offset N(0, scale^2), so that
    tokens of a batch share their batch effect, plus per-token jitter N(0, (scale/2)^2)."""
    batch_offset = rng.normal(0.0, nuisance_scale, size=(n_batches, n_nuisance))
    token_jitter = rng.normal(0.0, nuisance_scale / 2.0, size=(n, n_nuisance))
    return (batch_offset[batch] + token_jitter).astype(np.float32)


def _mix_tokens(
    codes: sp.csr_matrix,
    atoms: np.ndarray,
    nuisance_coefficients: np.ndarray,
    nuisance: np.ndarray,
    noise: np.ndarray,
) -> np.ndarray:
    """``codes @ atoms + nuisance_coefficients @ nuisance + noise`` in float64, as float32
    (row block by row block: the float64 sum of every token is never held at once)."""
    tokens = np.empty(noise.shape, dtype=np.float32)
    for start, stop in _row_blocks(noise.shape[0], noise.shape[1]):
        block = np.asarray(codes[start:stop].astype(np.float64) @ atoms)
        block += nuisance_coefficients[start:stop].astype(np.float64) @ nuisance
        block += noise[start:stop]
        tokens[start:stop] = block
    return tokens


def _token_obs(
    n: int,
    perturbation: np.ndarray,
    cell_type: np.ndarray,
    batch: np.ndarray,
    split: np.ndarray,
    pert_labels: np.ndarray,
    ct_labels: np.ndarray,
    batch_labels: np.ndarray,
) -> pd.DataFrame:
    """Per-token metadata (token_id, is_control, split, perturbation, cell_type, batch), with
    the string columns as object dtype; controls get the perturbation ``CONTROL_LABEL``."""
    is_control = perturbation < 0
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
    return obs


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
    # Every random draw below comes from this one stream, in a fixed order: the helpers are
    # called in that order, and reordering them would change the simulated data.
    rng = np.random.default_rng(seed)
    n, d = n_tokens, n_dims
    n_pert_atoms = n_perturbations * atoms_per_perturbation
    n_background = n_atoms - n_pert_atoms - n_cell_types

    atoms = random_atoms(n_atoms, d, rng, max_coherence)
    nuisance = _nuisance_directions(n_nuisance, d, rng)
    pert_labels = _names("P", n_perturbations, 3)
    ct_labels = _names("CT", n_cell_types, 2)
    batch_labels = _names("batch", n_batches, 2)
    atom_table = _atom_table(n_atoms, pert_labels, atoms_per_perturbation, ct_labels, n_background)

    n_controls = int(round(control_fraction * n))
    perturbation = _perturbation_per_token(n, n_controls, n_perturbations, rng)
    cell_type = _balanced_assignment(n, n_cell_types, rng)
    batch = _balanced_assignment(n, n_batches, rng)
    split = np.where(batch >= n_batches - test_batches, "test", "train")

    entries = [
        _cell_type_entries(n, cell_type, n_pert_atoms, rng),
        _perturbation_entries(
            perturbation, n_perturbations, atoms_per_perturbation, penetrance, rng
        ),
        _background_entries(n, n_background, n_pert_atoms + n_cell_types, background_rate, rng),
    ]
    codes = _codes_matrix(entries, n, n_atoms)
    nuisance_coefficients = _nuisance_coefficients(
        n, batch, n_batches, n_nuisance, nuisance_scale, rng
    )
    noise = np.empty((n, d), dtype=np.float32)
    for start, stop in _row_blocks(n, d):  # as one (n, d) draw, in float64 blocks
        noise[start:stop] = rng.normal(0.0, noise_scale / np.sqrt(d), size=(stop - start, d))
    tokens = _mix_tokens(codes, atoms, nuisance_coefficients, nuisance, noise)
    obs = _token_obs(n, perturbation, cell_type, batch, split, pert_labels, ct_labels, batch_labels)

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
    data: SuperpositionData,
    *,
    atoms: PathLike,
    atom_table: PathLike,
    nuisance: PathLike,
    codes: PathLike | None = None,
) -> None:
    """Write the true atoms (A, d) as .npy, the atom table (atom, role, label) as CSV, the
    nuisance directions (q, d) as .npy and, when a path is given, the true codes (scipy sparse,
    (n, A)) as .npz; each atomically."""
    for path in (atoms, atom_table, nuisance, *([codes] if codes is not None else [])):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    for path, array in ((atoms, data.atoms), (nuisance, data.nuisance)):
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
    with atomic_path(atom_table) as tmp:
        data.atom_table.to_csv(tmp, index=False)
    if codes is not None:
        with atomic_path(codes) as tmp, open(tmp, "wb") as handle:
            sp.save_npz(handle, data.codes)
