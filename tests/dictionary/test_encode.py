"""encode_tokens: CSR codes, original-space reconstructions and cosines, with real whitening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cellconcepts.dictionary.encode import encode_tokens
from cellconcepts.dictionary.icfl import ICFL
from cellconcepts.dictionary.settings import ICFLSettings
from cellconcepts.dictionary.topk import TopKSAE
from cellconcepts.dictionary.whitening import fit_whitening


def make_tokens(n: int = 90, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) + 2 * np.eye(d)  # well-conditioned covariance
    return (rng.standard_normal((n, d)) @ mixing + 3.0).astype(np.float32)


def perfect_topk(d: int) -> TopKSAE:
    """W_dec = [I, -I], W_enc = W_dec^T, k = d: ReLU(TopK) keeps |y_i| on the right column,
    so decode(encode(y)) == y exactly."""
    model = TopKSAE(d, 2 * d, d, seed=0)
    W = torch.cat([torch.eye(d), -torch.eye(d)], dim=1)
    with torch.no_grad():
        model.W_dec.copy_(W)
        model.W_enc.copy_(W.T)
    return model


@pytest.mark.parametrize("method", ["none", "pca"])
def test_perfect_model_gives_original_tokens_back(tmp_path: Path, method: str) -> None:
    tokens = make_tokens()
    whitening = fit_whitening(tokens, np.arange(40), method)
    path = tmp_path / "recon" / "reconstruction.npy"
    result = encode_tokens(
        perfect_topk(whitening.output_dim),
        tokens,
        whitening,
        batch_size=16,
        device="cpu",
        reconstruction_path=path,
    )
    recon = np.load(path)
    assert recon.dtype == np.float32 and recon.shape == tokens.shape
    np.testing.assert_allclose(recon, tokens, rtol=0, atol=1e-4)
    np.testing.assert_allclose(result.cosine_model, 1.0, atol=1e-6)
    np.testing.assert_allclose(result.cosine_original, 1.0, atol=1e-6)
    assert result.codes.nnz == tokens.shape[0] * tokens.shape[1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["reconstruction.npy"]


def test_codes_match_dense_encode_and_cosines_are_independent(tmp_path: Path) -> None:
    tokens = make_tokens(n=75, d=8, seed=1)
    whitening = fit_whitening(tokens, np.arange(30), "pca")
    model = ICFL(8, 20, 4, ICFLSettings(atoms_per_iteration=2), seed=3)
    with torch.no_grad():
        model.b_pre.copy_(0.05 * torch.arange(8.0))
    result = encode_tokens(model, tokens, whitening, batch_size=7, device="cpu")

    y = whitening.transform(tokens)
    dense = model.encode(torch.from_numpy(y)).numpy()
    codes = result.codes
    assert codes.shape == (75, 20) and codes.dtype == np.float32 and codes.format == "csr"
    assert codes.nnz == int((dense != 0).sum()) and (codes.getnnz(axis=1) <= 4).all()
    np.testing.assert_allclose(codes.toarray(), dense, atol=1e-5)

    # Cosines computed here with NumPy from the model's weights and the whitening's maths.
    W, b = model.W_dec.detach().double().numpy(), model.b_pre.detach().double().numpy()
    x_hat = dense.astype(np.float64) @ W.T + b
    cos = (y * x_hat).sum(1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(x_hat, axis=1))
    np.testing.assert_allclose(result.cosine_model, cos, atol=1e-5)
    norms = np.linalg.norm(
        ((tokens - whitening.mean) @ whitening.components) * whitening.scale, axis=1
    )
    recon = (x_hat * norms[:, None] / whitening.scale) @ whitening.components.T
    centred = tokens - whitening.mean
    cos_orig = (centred * recon).sum(1) / (
        np.linalg.norm(centred, axis=1) * np.linalg.norm(recon, axis=1)
    )
    np.testing.assert_allclose(result.cosine_original, cos_orig, atol=1e-4)
    for cosines in (result.cosine_model, result.cosine_original):
        assert cosines.shape == (75,) and (np.abs(cosines) <= 1).all()


def test_zero_row_gets_zero_cosine_and_dimension_errors() -> None:
    tokens = make_tokens(n=20, d=4, seed=2)
    whitening = fit_whitening(tokens, np.arange(20), "none")
    whitening.mean = whitening.mean.astype(np.float32).astype(np.float64)
    tokens[3] = whitening.mean  # centred token is exactly zero: cosine undefined -> 0
    result = encode_tokens(perfect_topk(4), tokens, whitening, device="cpu")
    assert result.cosine_model[3] == 0.0 and result.cosine_original[3] == 0.0
    with pytest.raises(ValueError, match="model expects 5-dim"):
        encode_tokens(perfect_topk(5), tokens, whitening, device="cpu")
    with pytest.raises(ValueError, match="whitening expects 4 input dims"):
        encode_tokens(perfect_topk(4), tokens[:, :3], whitening, device="cpu")


def test_code_rows_build_the_csr_of_the_batches_within_the_sparsity_bound():
    import scipy.sparse as sp

    from cellconcepts.dictionary.encode import _CodeRows

    z = torch.zeros(5, 7)
    z[0, 3], z[2, 1], z[2, 6], z[4, 0] = 1.0, -2.0, 3.0, 0.5
    rows = _CodeRows(5, 7, max_nonzeros=2)
    rows.append(z[:3])
    rows.append(z[3:])
    codes = rows.matrix()
    assert codes.dtype == np.float32 and codes.indices.dtype == np.int32
    np.testing.assert_array_equal(codes.toarray(), z.numpy())
    assert (codes != sp.csr_matrix(z.numpy())).nnz == 0
    too_dense = _CodeRows(2, 7, max_nonzeros=1)
    with pytest.raises(ValueError, match="more non-zeros than the model's sparsity"):
        too_dense.append(torch.ones(2, 7))
