"""Tests for cellconcepts.dictionary.whitening, checked against numpy.linalg.eigh / np.cov on
the control rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cellconcepts.dictionary.whitening import Whitening, fit_whitening
from cellconcepts.store.tokens import iter_batches, write_token_store

N, D = 300, 6
CONTROLS = np.arange(0, N, 3)


def make_tokens(n: int = N, d: int = D, rank: int | None = None, seed: int = 0) -> np.ndarray:
    """Anisotropic Gaussian tokens far from the origin (optionally in a rank-`rank` subspace)."""
    rng = np.random.default_rng(seed)
    r = d if rank is None else rank
    scales = np.geomspace(10.0, 0.1, r)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :r]
    coeffs = rng.normal(size=(n, r)) * scales
    return (5.0 + coeffs @ basis.T).astype(np.float32)


def reference_pca(tokens: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, ...]:
    """Control mean, eigenvalues (descending) and eigenvectors computed directly."""
    ctrl = tokens[controls].astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(ctrl, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    return ctrl.mean(axis=0), eigenvalues[order], eigenvectors[:, order]


def aligned(reference: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Reference eigenvectors with signs flipped to match `components` (eigh's sign is free)."""
    k = components.shape[1]
    signs = np.sign(np.sum(reference[:, :k] * components, axis=0))
    return reference[:, :k] * signs


def unnormalised(w: Whitening, x: np.ndarray) -> np.ndarray:
    y, norms = w.transform_with_norms(x)
    return y.astype(np.float64) * norms.astype(np.float64)[:, None]


def test_fit_matches_reference_eigendecomposition():
    tokens = make_tokens()
    w = fit_whitening(tokens, CONTROLS, eps_relative=1e-3, batch_size=17)
    mean, eigenvalues, eigenvectors = reference_pca(tokens, CONTROLS)
    np.testing.assert_allclose(w.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.eigenvalues, eigenvalues, rtol=1e-9)
    np.testing.assert_allclose(np.abs(eigenvectors.T @ w.components), np.eye(D), atol=1e-9)
    assert w.eps == pytest.approx(1e-3 * eigenvalues.mean(), rel=1e-12)
    np.testing.assert_allclose(w.scale, (eigenvalues + w.eps) ** -0.5, rtol=1e-9)
    assert (w.input_dim, w.output_dim) == (D, D)


def test_control_covariance_is_identity():
    tokens = make_tokens()
    w = fit_whitening(tokens, CONTROLS, eps_relative=1e-12)
    z = unnormalised(w, tokens[CONTROLS])
    cov = np.cov(z, rowvar=False)
    np.testing.assert_allclose(cov, np.eye(D), atol=1e-6)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)


def test_control_covariance_identity_on_retained_components_low_rank():
    tokens = make_tokens(d=8, rank=5)
    w = fit_whitening(tokens, CONTROLS, eps_relative=1e-12)
    assert w.output_dim == 5
    cov = np.cov(unnormalised(w, tokens[CONTROLS]), rowvar=False)
    np.testing.assert_allclose(cov, np.eye(5), atol=1e-6)


def test_control_mean_maps_to_zero_and_rows_unit_norm():
    tokens = make_tokens()
    w = fit_whitening(tokens, CONTROLS)
    y, norms = w.transform_with_norms(w.mean[None, :])
    np.testing.assert_array_equal(y, 0.0)
    np.testing.assert_array_equal(norms, 0.0)
    y = w.transform(tokens)
    assert y.dtype == np.float32 and y.shape == (N, D)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)


def test_inverse_transform_full_rank():
    tokens = make_tokens()
    w = fit_whitening(tokens, CONTROLS)
    y, norms = w.transform_with_norms(tokens)
    np.testing.assert_allclose(w.inverse_transform(y, norms), tokens, rtol=1e-5, atol=1e-5)


def test_inverse_transform_retained_subspace():
    tokens = make_tokens(d=8, rank=5)
    w = fit_whitening(tokens, CONTROLS)
    y, norms = w.transform_with_norms(tokens)
    assert y.shape == (N, 5)
    np.testing.assert_allclose(w.inverse_transform(y, norms), tokens, rtol=1e-5, atol=1e-5)
    # Without norms the unit rows map back to mean + unit-whitened direction.
    back = w.inverse_transform(y)
    np.testing.assert_allclose(
        back - w.mean, (tokens - w.mean) / norms[:, None], rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(("d", "rank"), [(6, None), (8, 5)])
def test_directions_to_input_space_recovers_atoms(d, rank):
    tokens = make_tokens(d=d, rank=rank)
    eps_relative = 1e-3
    w = fit_whitening(tokens, CONTROLS, eps_relative=eps_relative)
    mean, eigenvalues, eigenvectors = reference_pca(tokens, CONTROLS)
    k = w.output_dim
    u = aligned(eigenvectors, w.components)
    s = (eigenvalues[:k] + eps_relative * eigenvalues[:k].mean()) ** -0.5

    rng = np.random.default_rng(1)
    # True atoms inside the control subspace (for the low-rank case, project them there).
    atoms = rng.normal(size=(d, 4))
    atoms = u @ (u.T @ atoms)
    atoms /= np.linalg.norm(atoms, axis=0)
    whitened = s[:, None] * (u.T @ atoms)
    whitened /= np.linalg.norm(whitened, axis=0)
    recovered = w.directions_to_input_space(whitened)
    assert recovered.shape == (d, 4)
    np.testing.assert_allclose(np.linalg.norm(recovered, axis=0), 1.0, atol=1e-12)
    assert np.all(np.sum(recovered * atoms, axis=0) > 0.999999)

    # End to end: a token displaced from the control mean along an atom whitens to that atom.
    shifted = (mean + 3.0 * atoms.T).astype(np.float64)
    back = w.directions_to_input_space(w.transform(shifted).astype(np.float64).T)
    assert np.all(np.sum(back * atoms, axis=0) > 0.9999)


def test_n_components_truncation_keeps_top_components():
    tokens = make_tokens()
    w = fit_whitening(tokens, CONTROLS, n_components=3, eps_relative=1e-3)
    _, eigenvalues, eigenvectors = reference_pca(tokens, CONTROLS)
    assert w.components.shape == (D, 3) and w.output_dim == 3
    np.testing.assert_allclose(w.eigenvalues, eigenvalues[:3], rtol=1e-9)
    np.testing.assert_allclose(np.abs(eigenvectors[:, :3].T @ w.components), np.eye(3), atol=1e-9)
    assert w.eps == pytest.approx(1e-3 * eigenvalues[:3].mean(), rel=1e-12)
    assert w.transform(tokens).shape == (N, 3)
    with pytest.raises(ValueError, match="n_components"):
        fit_whitening(tokens, CONTROLS, n_components=D + 1)


def test_none_method_centres_and_normalises():
    tokens = make_tokens()
    w = fit_whitening(tokens, CONTROLS, method="none")
    mean = tokens[CONTROLS].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(w.mean, mean, rtol=1e-12)
    assert w.components is None and w.eigenvalues is None
    assert (w.input_dim, w.output_dim) == (D, D)
    centred = tokens - mean
    expected = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    y, norms = w.transform_with_norms(tokens)
    np.testing.assert_allclose(y, expected, atol=1e-6)
    np.testing.assert_allclose(norms, np.linalg.norm(centred, axis=1), rtol=1e-6)
    np.testing.assert_allclose(w.inverse_transform(y, norms), tokens, rtol=1e-5, atol=1e-5)
    directions = np.random.default_rng(2).normal(size=(D, 5))
    np.testing.assert_allclose(
        w.directions_to_input_space(directions),
        directions / np.linalg.norm(directions, axis=0),
        atol=1e-12,
    )


def test_only_control_rows_are_used():
    tokens = make_tokens()
    changed = tokens.copy()
    others = np.setdiff1d(np.arange(N), CONTROLS)
    changed[others] = np.random.default_rng(9).normal(size=(others.size, D)) * 100
    mask = np.zeros(N, dtype=bool)
    mask[CONTROLS] = True
    for method in ("pca", "none"):
        a = fit_whitening(tokens, CONTROLS, method=method)
        b = fit_whitening(changed, mask, method=method)
        np.testing.assert_array_equal(a.mean, b.mean)
        if method == "pca":
            np.testing.assert_array_equal(a.components, b.components)
            np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
            assert a.eps == b.eps


def test_batch_size_does_not_change_fit():
    tokens = make_tokens()
    a = fit_whitening(tokens, CONTROLS, batch_size=7)
    b = fit_whitening(tokens, CONTROLS, batch_size=10_000)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(a.components, b.components, atol=1e-10)


def test_torch_input_matches_numpy():
    tokens = make_tokens()
    w = fit_whitening(tokens, CONTROLS)
    y_np, norms_np = w.transform_with_norms(tokens)
    y_t, norms_t = w.transform_with_norms(torch.from_numpy(tokens))
    assert isinstance(y_t, torch.Tensor) and y_t.dtype == torch.float32
    assert y_t.device == torch.device("cpu")
    np.testing.assert_allclose(y_t.numpy(), y_np, atol=1e-6)
    np.testing.assert_allclose(norms_t.numpy(), norms_np, rtol=1e-6)
    assert isinstance(w.transform(torch.from_numpy(tokens)), torch.Tensor)
    back = w.inverse_transform(y_t, norms_t)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
    np.testing.assert_allclose(back.numpy(), tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["pca", "none"])
def test_save_load_round_trip(tmp_path, method):
    tokens = make_tokens(d=8, rank=5)
    w = fit_whitening(tokens, CONTROLS, method=method)
    w.save(tmp_path / "whitening.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["whitening.npz"]
    loaded = Whitening.load(tmp_path / "whitening.npz")
    assert loaded.method == method and loaded.eps == w.eps
    np.testing.assert_array_equal(loaded.mean, w.mean)
    if method == "pca":
        np.testing.assert_array_equal(loaded.components, w.components)
        np.testing.assert_array_equal(loaded.eigenvalues, w.eigenvalues)
    else:
        assert loaded.components is None and loaded.eigenvalues is None
    np.testing.assert_array_equal(loaded.transform(tokens), w.transform(tokens))


def test_too_few_controls_and_bad_input():
    tokens = make_tokens()
    with pytest.raises(ValueError, match="at least 2 control rows"):
        fit_whitening(tokens, np.array([4]))
    with pytest.raises(ValueError, match="at least 2 control rows"):
        fit_whitening(tokens, np.zeros(N, dtype=bool), method="none")
    with pytest.raises(ValueError, match="identical"):
        fit_whitening(np.ones((5, 3), dtype=np.float32), np.arange(5))
    with pytest.raises(ValueError, match="method"):
        fit_whitening(tokens, CONTROLS, method="zca")
    w = fit_whitening(tokens, CONTROLS)
    with pytest.raises(ValueError, match="shape"):
        w.transform(tokens[:, :4])


def test_fit_and_transform_on_float16_store(tmp_path):
    tokens = make_tokens()
    obs = pd.DataFrame(
        {
            "token_id": [f"t{i}" for i in range(N)],
            "is_control": np.isin(np.arange(N), CONTROLS),
            "split": "train",
        }
    )
    store = write_token_store(tmp_path / "store", tokens, obs, dtype="float16")
    w = fit_whitening(store.tokens, store.obs["is_control"].to_numpy(), batch_size=16)
    expected = fit_whitening(tokens.astype(np.float16).astype(np.float32), CONTROLS)
    np.testing.assert_allclose(w.eigenvalues, expected.eigenvalues, rtol=1e-9)
    rows, batches = zip(*iter_batches(store.tokens, 64, transform=w.transform), strict=True)
    np.testing.assert_array_equal(np.concatenate(rows), np.arange(N))
    np.testing.assert_allclose(
        np.concatenate(batches), w.transform(np.asarray(store.tokens, dtype=np.float32))
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_cuda_stays_on_device():
    tokens = make_tokens()
    w = fit_whitening(tokens, CONTROLS)
    x = torch.from_numpy(tokens).cuda()
    y, norms = w.transform_with_norms(x)
    assert y.is_cuda and norms.is_cuda and y.dtype == torch.float32
    np.testing.assert_allclose(y.cpu().numpy(), w.transform(tokens), atol=1e-6)
    back = w.inverse_transform(y, norms)
    assert back.is_cuda
    np.testing.assert_allclose(back.cpu().numpy(), tokens, rtol=1e-5, atol=1e-5)


def test_directions_to_model_space_is_the_linear_part_of_transform():
    rng = np.random.default_rng(7)
    tokens = rng.normal(size=(400, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    whitening = fit_whitening(tokens, np.arange(200), "pca", eps_relative=1e-6)
    atom = rng.normal(size=6)
    atom /= np.linalg.norm(atom)
    # The whitened image of mean + t * atom points along the mapped atom.
    y, norms = whitening.transform_with_norms((whitening.mean + 0.7 * atom)[None, :])
    expected = y[0] / np.linalg.norm(y[0])
    mapped = whitening.directions_to_model_space(atom[:, None])[:, 0]
    np.testing.assert_allclose(mapped, expected, atol=1e-6)
    round_trip = whitening.directions_to_input_space(mapped[:, None])[:, 0]
    np.testing.assert_allclose(round_trip, atom, atol=1e-6)


@pytest.mark.parametrize("method", ["pca", "none"])
def test_pullback_reads_what_the_feature_reads(method):
    tokens = make_tokens(seed=3)
    whitening = fit_whitening(tokens, CONTROLS, method, eps_relative=1e-3)
    rng = np.random.default_rng(4)
    w = rng.normal(size=(whitening.output_dim, 3))
    v = whitening.pullback(w)
    np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, atol=1e-9)
    # <v, x - mean> is proportional (one positive factor per feature) to <w, whitened x>.
    x = tokens[:20].astype(np.float64)
    token_side = (x - whitening.mean) @ v
    model_side = unnormalised(whitening, x) @ w
    ratio = token_side / model_side
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0], ratio.shape), rtol=1e-4)
    assert np.all(ratio[0] > 0)
    with pytest.raises(ValueError, match="shape"):
        whitening.pullback(np.ones((whitening.output_dim + 1, 2)))
