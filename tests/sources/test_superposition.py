"""Tests for the synthetic superposition simulator (cellconcepts.sources.superposition)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellconcepts.sources.superposition import (
    SuperpositionData,
    simulate_superposition,
    write_ground_truth,
)

SMALL = dict(
    n_tokens=3000,
    n_dims=32,
    n_atoms=60,
    n_perturbations=10,
    atoms_per_perturbation=3,
    n_cell_types=3,
    n_batches=5,
    n_nuisance=2,
    test_batches=2,
    control_fraction=0.25,
    penetrance=0.7,
    background_rate=0.05,
)


@pytest.fixture(scope="module")
def data() -> SuperpositionData:
    return simulate_superposition(**SMALL, seed=3)


def _perturbation_index(atom_table: pd.DataFrame) -> dict[str, np.ndarray]:
    pert = atom_table[atom_table["role"] == "perturbation"]
    return {label: group["atom"].to_numpy() for label, group in pert.groupby("label")}


def test_shapes_dtypes_and_columns(data: SuperpositionData) -> None:
    n, d, a = SMALL["n_tokens"], SMALL["n_dims"], SMALL["n_atoms"]
    assert data.tokens.shape == (n, d) and data.tokens.dtype == np.float32
    assert data.atoms.shape == (a, d)
    assert data.nuisance.shape == (SMALL["n_nuisance"], d)
    assert sp.issparse(data.codes) and data.codes.shape == (n, a)
    assert data.nuisance_coefficients.shape == (n, SMALL["n_nuisance"])
    assert data.noise.shape == (n, d)
    assert list(data.obs.columns[:3]) == ["token_id", "is_control", "split"]
    assert {"perturbation", "cell_type", "batch"} <= set(data.obs.columns)
    assert len(data.obs) == n and data.obs["token_id"].is_unique
    assert data.obs["token_id"].iloc[0] == "tok000000"
    assert data.obs["is_control"].dtype == bool
    assert (data.obs["is_control"] == (data.obs["perturbation"] == "control")).all()
    assert list(data.atom_table.columns) == ["atom", "role", "label"]
    assert np.isfinite(data.tokens).all()


def test_determinism_by_seed(data: SuperpositionData) -> None:
    again = simulate_superposition(**SMALL, seed=3)
    np.testing.assert_array_equal(again.tokens, data.tokens)
    np.testing.assert_array_equal(again.atoms, data.atoms)
    np.testing.assert_array_equal(again.codes.toarray(), data.codes.toarray())
    pd.testing.assert_frame_equal(again.obs, data.obs)
    pd.testing.assert_frame_equal(again.atom_table, data.atom_table)

    other = simulate_superposition(**SMALL, seed=4)
    assert not np.array_equal(other.tokens, data.tokens)
    assert not np.array_equal(other.atoms, data.atoms)
    assert not other.obs["perturbation"].equals(data.obs["perturbation"])


def test_tokens_equal_ground_truth_model(data: SuperpositionData) -> None:
    rebuilt = (
        data.codes.toarray().astype(np.float64) @ data.atoms
        + data.nuisance_coefficients.astype(np.float64) @ data.nuisance
        + data.noise.astype(np.float64)
    )
    np.testing.assert_allclose(data.tokens, rebuilt, rtol=1e-6, atol=1e-5)


def test_atoms_and_nuisance_are_unit_and_incoherent(data: SuperpositionData) -> None:
    np.testing.assert_allclose(np.linalg.norm(data.atoms, axis=1), 1.0, atol=1e-12)
    gram = data.atoms @ data.atoms.T
    assert np.abs(gram[np.triu_indices_from(gram, k=1)]).max() <= 0.6
    np.testing.assert_allclose(
        data.nuisance @ data.nuisance.T, np.eye(SMALL["n_nuisance"]), atol=1e-12
    )


def test_atom_roles_and_labels(data: SuperpositionData) -> None:
    table = data.atom_table
    counts = table["role"].value_counts()
    n_pert_atoms = SMALL["n_perturbations"] * SMALL["atoms_per_perturbation"]
    assert counts["perturbation"] == n_pert_atoms
    assert counts["cell_type"] == SMALL["n_cell_types"]
    assert counts["background"] == SMALL["n_atoms"] - n_pert_atoms - SMALL["n_cell_types"]
    owned = _perturbation_index(table)
    assert sorted(owned) == sorted(set(data.obs["perturbation"]) - {"control"})
    assert all(len(atoms) == SMALL["atoms_per_perturbation"] for atoms in owned.values())
    ct_labels = set(table.loc[table["role"] == "cell_type", "label"])
    assert ct_labels == set(data.obs["cell_type"])


def test_codes_non_negative_and_structured(data: SuperpositionData) -> None:
    codes = data.codes.toarray()
    assert (codes >= 0).all()
    table = data.atom_table
    ct_table = table[table.role == "cell_type"]
    ct_atom = dict(zip(ct_table["label"], ct_table["atom"], strict=True))
    ct_cols = ct_table["atom"].to_numpy()
    expected_ct = np.array([ct_atom[c] for c in data.obs["cell_type"]])
    # exactly one cell-type atom per token: its own, amplitude in [0.5, 1.5]
    ct_codes = codes[:, ct_cols]
    assert ((ct_codes > 0).sum(axis=1) == 1).all()
    own = codes[np.arange(len(codes)), expected_ct]
    assert (own >= 0.5).all() and (own <= 1.5).all()


def test_controls_have_no_perturbation_activity(data: SuperpositionData) -> None:
    pert_cols = data.atom_table.loc[data.atom_table.role == "perturbation", "atom"].to_numpy()
    controls = data.obs["is_control"].to_numpy()
    assert controls.sum() == round(SMALL["control_fraction"] * SMALL["n_tokens"])
    assert data.codes[controls][:, pert_cols].nnz == 0


def test_only_own_perturbation_atoms_active(data: SuperpositionData) -> None:
    codes = data.codes.toarray()
    owned = _perturbation_index(data.atom_table)
    pert_cols = data.atom_table.loc[data.atom_table.role == "perturbation", "atom"].to_numpy()
    labels = data.obs["perturbation"].to_numpy()
    n_active = 0
    n_possible = 0
    for label, cols in owned.items():
        rows = labels == label
        foreign = np.setdiff1d(pert_cols, cols)
        assert not codes[np.ix_(rows, foreign)].any(), label
        n_active += int((codes[np.ix_(rows, cols)] > 0).sum())
        n_possible += int(rows.sum()) * len(cols)
    # fraction of (perturbed token, own atom) pairs active ~ Binomial(n_possible, penetrance)
    p = SMALL["penetrance"]
    sd = np.sqrt(p * (1 - p) / n_possible)
    assert abs(n_active / n_possible - p) < 5 * sd


def test_perturbations_balanced_and_strength_bounds(data: SuperpositionData) -> None:
    counts = data.obs.loc[~data.obs.is_control, "perturbation"].value_counts()
    assert len(counts) == SMALL["n_perturbations"]
    assert counts.max() - counts.min() <= 1
    for column, n_groups in (("cell_type", SMALL["n_cell_types"]), ("batch", SMALL["n_batches"])):
        sizes = data.obs[column].value_counts()
        assert len(sizes) == n_groups and sizes.max() - sizes.min() <= 1
    pert_cols = data.atom_table.loc[data.atom_table.role == "perturbation", "atom"].to_numpy()
    values = data.codes[:, pert_cols].data
    assert values.min() >= 0.5 * 0.6 and values.max() <= 1.5 * 1.4


def test_background_rate(data: SuperpositionData) -> None:
    bg_cols = data.atom_table.loc[data.atom_table.role == "background", "atom"].to_numpy()
    active = data.codes[:, bg_cols].nnz
    n_possible = SMALL["n_tokens"] * len(bg_cols)
    p = SMALL["background_rate"]
    sd = np.sqrt(p * (1 - p) / n_possible)
    assert abs(active / n_possible - p) < 5 * sd
    controls = data.obs["is_control"].to_numpy()
    assert data.codes[controls][:, bg_cols].nnz > 0


def test_split_by_batch(data: SuperpositionData) -> None:
    batches = sorted(data.obs["batch"].unique())
    test_batches = set(batches[-SMALL["test_batches"] :])
    expected = np.where(data.obs["batch"].isin(test_batches), "test", "train")
    np.testing.assert_array_equal(data.obs["split"].to_numpy(), expected)


def test_nuisance_is_shared_by_batch(data: SuperpositionData) -> None:
    # per-batch offsets dominate: between-batch variance of the mean coefficient is far above
    # the per-token jitter variance / batch size
    coef = pd.DataFrame(data.nuisance_coefficients).groupby(data.obs["batch"].to_numpy()).mean()
    within = pd.DataFrame(data.nuisance_coefficients).groupby(data.obs["batch"].to_numpy()).std()
    np.testing.assert_allclose(within.to_numpy(), 3.0 / 2, rtol=0.15)
    assert coef.to_numpy().std() > 0.5


def test_noise_scale() -> None:
    small = simulate_superposition(**{**SMALL, "noise_scale": 0.5}, seed=0)
    norms = np.linalg.norm(small.noise, axis=1)
    assert abs(norms.mean() - 0.5) < 0.03


def test_too_few_atoms_is_an_error() -> None:
    with pytest.raises(ValueError, match="n_atoms"):
        simulate_superposition(**{**SMALL, "n_atoms": 32}, seed=0)


@pytest.mark.parametrize(
    ("key", "value"),
    [("test_batches", 5), ("control_fraction", 0.0), ("penetrance", 1.5), ("n_nuisance", 40)],
)
def test_bad_parameters_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=key):
        simulate_superposition(**{**SMALL, key: value}, seed=0)


def test_write_ground_truth(data: SuperpositionData, tmp_path) -> None:
    folder = tmp_path / "truth"
    paths = {
        name: folder / f"{name}.{ext}"
        for name, ext in (
            ("atoms", "npy"),
            ("atom_table", "csv"),
            ("nuisance", "npy"),
            ("codes", "npz"),
        )
    }
    write_ground_truth(data, **paths)
    np.testing.assert_array_equal(np.load(paths["atoms"]), data.atoms)
    np.testing.assert_array_equal(np.load(paths["nuisance"]), data.nuisance)
    table = pd.read_csv(paths["atom_table"])
    pd.testing.assert_frame_equal(table, data.atom_table)
    np.testing.assert_array_equal(sp.load_npz(paths["codes"]).toarray(), data.codes.toarray())
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths.values())
