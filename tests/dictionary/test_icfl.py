"""ICFL encoder (Algorithm 1) against a naive NumPy implementation, and correlated-column resets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from cellconcepts.dictionary.icfl import ICFL, icfl_encode, icfl_select
from cellconcepts.dictionary.models import build_model
from cellconcepts.dictionary.settings import ICFLSettings


def omp_reference(
    x: np.ndarray,
    W: np.ndarray,
    b_pre: np.ndarray,
    n_iterations: int,
    atoms: int,
    selection: str = "signed",
) -> np.ndarray:
    """Algorithm 1, one token at a time, float64, straight from the paper (``selection``
    "absolute": the largest |scores| instead, OMP's rule)."""
    codes = np.zeros((x.shape[0], W.shape[1]))
    for row, token in enumerate(x):
        r = token - b_pre
        for _ in range(n_iterations):
            scores = W.T @ r
            ranked = np.abs(scores) if selection == "absolute" else scores
            selected = np.argsort(-ranked, kind="stable")[:atoms]
            coef, *_ = np.linalg.lstsq(W[:, selected], r, rcond=None)
            r = r - W[:, selected] @ coef
            codes[row, selected] += coef
    return codes


@pytest.mark.parametrize("method", ["residual", "gram"])
def test_the_absolute_rule_matches_its_reference_and_differs_from_the_signed(method: str) -> None:
    rng = np.random.default_rng(5)
    d, m, n = 24, 160, 120
    W = unit_columns(rng.standard_normal((d, m)))
    x = rng.standard_normal((n, d))
    expected = omp_reference(x, W, np.zeros(d), 4, 2, selection="absolute")
    arguments = (torch.from_numpy(x), torch.from_numpy(W), torch.zeros(d, dtype=torch.float64))
    got = icfl_encode(*arguments, 4, 2, method=method, selection="absolute").numpy()
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)
    signed = icfl_encode(*arguments, 4, 2, method=method).numpy()
    assert ((signed != 0) != (got != 0)).any(axis=1).mean() > 0.5  # other supports
    # OMP's rule reconstructs these random tokens better (residual after J * L atoms)
    error = {
        name: np.linalg.norm(x - codes @ W.T, axis=1).mean()
        for name, codes in (("signed", signed), ("absolute", got))
    }
    assert error["absolute"] < error["signed"]
    with pytest.raises(ValueError, match="selection must be one of"):
        icfl_encode(*arguments, 4, 2, selection="largest")


def test_the_selection_rule_is_saved_with_the_model(tmp_path) -> None:
    from cellconcepts.dictionary.models import load_model, save_model

    model = build_model("icfl", 8, 16, 4, atoms_per_iteration=2, selection="absolute")
    save_model(model, tmp_path / "m.pt", {})
    loaded, meta = load_model(tmp_path / "m.pt")
    assert loaded.selection == "absolute" and meta["selection"] == "absolute"


def unit_columns(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w, axis=0, keepdims=True)


@pytest.mark.parametrize(
    ("method", "gram_update"), [("residual", None), ("gram", "sparse"), ("gram", "gather")]
)
@pytest.mark.parametrize(("n_iterations", "atoms"), [(1, 1), (3, 2), (4, 3), (2, 5), (20, 5)])
def test_matches_numpy_reference(
    n_iterations: int, atoms: int, method: str, gram_update: str | None
) -> None:
    """Every implementation chooses the supports of Algorithm 1 run token by token, and their
    codes agree with its least-squares solutions; "gather" is the Gram update CUDA takes, run
    here on CPU. 150 tokens: more than one of the Gram path's cache-sized chunks (64 tokens on
    CPU)."""
    rng = np.random.default_rng(1)
    d, m, n = 24, 160, 150
    W = unit_columns(rng.standard_normal((d, m)))
    b_pre = 0.1 * rng.standard_normal(d)
    x = rng.standard_normal((n, d))
    expected = omp_reference(x, W, b_pre, n_iterations, atoms)
    got = icfl_encode(
        torch.from_numpy(x),
        torch.from_numpy(W),
        torch.from_numpy(b_pre),
        n_iterations,
        atoms,
        method=method,
        gram_update=gram_update,
    )
    assert got.dtype == torch.float64 and got.shape == (n, m)
    np.testing.assert_array_equal(got.numpy() != 0, expected != 0)  # identical supports
    # float64, random (well-conditioned) atoms: the tiny ridge changes codes by ~1e-10.
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-8)


def test_gram_path_equals_the_residual_path_in_float32() -> None:
    """At the working precision the two paths round differently; supports still agree on
    nearly every token and codes closely."""
    rng = np.random.default_rng(4)
    d, m, n = 64, 512, 512
    W = torch.from_numpy(unit_columns(rng.standard_normal((d, m)))).float()
    x = torch.from_numpy(rng.standard_normal((n, d))).float()
    b = torch.zeros(d)
    residual = icfl_encode(x, W, b, 4, 2, method="residual")
    gram = icfl_encode(x, W, b, 4, 2, method="gram")
    same_support = ((residual != 0) == (gram != 0)).all(dim=1).float().mean()
    assert same_support >= 0.99
    torch.testing.assert_close(gram, residual, rtol=0, atol=1e-3)


def test_the_gather_update_agrees_with_the_sparse_one_in_float32() -> None:
    """The two exact updates of the Gram path sum the same products in another order: in
    float32 they choose the same atoms for nearly every token, with close codes."""
    rng = np.random.default_rng(6)
    d, m, n = 64, 512, 512
    W = torch.from_numpy(unit_columns(rng.standard_normal((d, m)))).float()
    x = torch.from_numpy(rng.standard_normal((n, d))).float()
    codes = {
        update: icfl_encode(x, W, torch.zeros(d), 4, 2, method="gram", gram_update=update)
        for update in ("sparse", "gather")
    }
    same_support = ((codes["sparse"] != 0) == (codes["gather"] != 0)).all(dim=1)
    assert same_support.float().mean() >= 0.99
    torch.testing.assert_close(codes["gather"], codes["sparse"], rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="gram_update must be one of"):
        icfl_encode(x, W, torch.zeros(d), 4, 2, method="gram", gram_update="dense")


class _CountedPool(ThreadPoolExecutor):
    """The thread pool the Gram path uses, counting how often it is made."""

    made = 0

    def __init__(self, *args, **kwargs) -> None:
        type(self).made += 1
        super().__init__(*args, **kwargs)


@pytest.mark.parametrize(
    ("selection", "update"), [("signed", "sparse"), ("absolute", "sparse"), ("signed", "gather")]
)
def test_the_gram_path_gives_the_same_bits_on_one_thread_and_on_several(
    selection: str, update: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU the Gram path's blocks of tokens are shared among torch's threads when there are
    enough of them (600 tokens at M = 8,192: ten blocks of 64, the last one partial); each
    block's arithmetic is the same, so the selections and coefficients are bit for bit those
    of one thread, also under inference mode; torch's thread count is restored."""
    from cellconcepts.dictionary import icfl

    monkeypatch.setattr(icfl, "ThreadPoolExecutor", _CountedPool)
    rng = np.random.default_rng(7)
    d, m, n = 48, 8192, 600
    W = torch.from_numpy(unit_columns(rng.standard_normal((d, m)))).float()
    x = torch.from_numpy(rng.standard_normal((n, d))).float()
    b = torch.from_numpy(0.1 * rng.standard_normal(d)).float()

    def encode() -> tuple[torch.Tensor, torch.Tensor]:
        return icfl_select(x, W, b, 6, 3, method="gram", selection=selection, gram_update=update)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = encode()
        assert _CountedPool.made == 0
        torch.set_num_threads(2)
        several = encode()
        assert _CountedPool.made == 1 and torch.get_num_threads() == 2
        with torch.inference_mode():
            inferred = encode()
        assert _CountedPool.made == 2
    finally:
        torch.set_num_threads(threads)
        _CountedPool.made = 0
    for other in (several, inferred):
        assert torch.equal(one[0], other[0]) and torch.equal(one[1], other[1])
    # and they are Algorithm 1's (float32 against float64: nearly every token)
    reference = omp_reference(*(t.double().numpy() for t in (x, W, b)), 6, 3, selection)
    codes = torch.zeros(n, m, dtype=torch.float64).scatter_add_(1, one[0], one[1].double())
    assert ((codes.numpy() != 0) == (reference != 0)).all(axis=1).mean() >= 0.99


@pytest.mark.parametrize("threads", [1, 2])
def test_batches_larger_than_a_chunk_keep_every_token(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Gram path computes correlations a chunk of tokens at a time (8,192; 100 here) and
    iterates each chunk in blocks (64 tokens at M = 8,192) that need not divide it: every
    token gets Algorithm 1's atoms, the last partial block of each chunk included."""
    from cellconcepts.dictionary import icfl

    monkeypatch.setattr(icfl, "_GRAM_CHUNK", 100)
    rng = np.random.default_rng(8)
    d, m, n = 16, 8192, 250
    W = unit_columns(rng.standard_normal((d, m)))
    x = rng.standard_normal((n, d))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        arguments = (torch.from_numpy(x), torch.from_numpy(W), torch.zeros(d, dtype=torch.float64))
        got = icfl_encode(*arguments, 2, 2, method="gram").numpy()
    finally:
        torch.set_num_threads(previous)
    expected = omp_reference(x, W, np.zeros(d), 2, 2)
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gram_path_chooses_the_atoms_of_the_cpu_path() -> None:
    """The CUDA Gram path (gathered rows of G, no sparse format) against the CPU's sparse and
    gather updates, float32, on a batch at the paper's width: the same atoms for nearly every
    token (the sums run in other orders, so a near-tie may flip), and close coefficients where
    the atoms agree."""
    torch.manual_seed(0)
    d, m, n = 1024, 8192, 512
    W = torch.nn.functional.normalize(torch.randn(d, m), dim=0)
    x = torch.nn.functional.normalize(torch.randn(n, d), dim=1)
    b = torch.zeros(d)
    cuda = icfl_encode(x.cuda(), W.cuda(), b.cuda(), 20, 5, method="gram").cpu()
    for update in ("sparse", "gather"):
        cpu = icfl_encode(x, W, b, 20, 5, method="gram", gram_update=update)
        same = ((cpu != 0) == (cuda != 0)).all(dim=1)
        assert same.float().mean() >= 0.99
        torch.testing.assert_close(cuda[same], cpu[same], rtol=0, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["residual", "gram"])
def test_cuda_matches_numpy_reference(method: str) -> None:
    rng = np.random.default_rng(2)
    d, m, n = 32, 256, 300
    W = unit_columns(rng.standard_normal((d, m)))
    x = rng.standard_normal((n, d))
    expected = omp_reference(x, W, np.zeros(d), 4, 5)
    got = icfl_encode(
        torch.from_numpy(x).cuda(),
        torch.from_numpy(W).cuda(),
        torch.zeros(d, dtype=torch.float64, device="cuda"),
        4,
        5,
        method=method,
    )
    assert got.is_cuda
    np.testing.assert_array_equal(got.cpu().numpy() != 0, expected != 0)
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=0, atol=1e-8)


def test_auto_takes_the_gram_path_when_it_is_cheaper() -> None:
    from cellconcepts.dictionary.icfl import gram_is_cheaper

    assert gram_is_cheaper(batch=1024, dim=1024, n_features=8192, n_iterations=20)
    assert not gram_is_cheaper(batch=64, dim=64, n_features=8192, n_iterations=1)
    # On CUDA the residual path was faster at every measured shape (benchmarks/README.md).
    assert not gram_is_cheaper(1024, 1024, 8192, 20, 5, device_type="cuda")


def test_at_most_j_times_l_nonzeros_and_negative_codes() -> None:
    rng = np.random.default_rng(2)
    W = torch.from_numpy(unit_columns(rng.standard_normal((16, 64)))).float()
    x = torch.from_numpy(rng.standard_normal((200, 16))).float()
    z = icfl_encode(x, W, torch.zeros(16), 4, 2)
    nnz = (z != 0).sum(1)
    assert int(nnz.max()) <= 8 and int(nnz.min()) >= 2
    assert bool((z < 0).any())


def test_selection_is_signed_not_absolute() -> None:
    # Scores are (-0.9, 0.3, 0.1): the largest magnitude is negative and must never be picked.
    W = torch.eye(3, dtype=torch.float64)
    x = torch.tensor([[-0.9, 0.3, 0.1]], dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    z = icfl_encode(x, W, b, 1, 1)
    np.testing.assert_allclose(z.numpy(), [[0.0, 0.3, 0.0]], atol=1e-9)
    z3 = icfl_encode(x, W, b, 3, 1)
    assert z3[0, 0] == 0.0
    np.testing.assert_allclose(z3[0, 1:].numpy(), [0.3, 0.1], atol=1e-9)


def test_least_squares_code_can_be_negative() -> None:
    # Two nearby atoms, x outside their cone: both selected, one coefficient must be negative.
    theta = 0.2
    W = torch.tensor([[1.0, np.cos(theta)], [0.0, np.sin(theta)]], dtype=torch.float64)
    x = torch.tensor([[1.0, -0.1]], dtype=torch.float64)
    z = icfl_encode(x, W, torch.zeros(2, dtype=torch.float64), 1, 2)
    beta = -0.1 / np.sin(theta)
    np.testing.assert_allclose(z.numpy(), [[1.0 - beta * np.cos(theta), beta]], atol=1e-8)
    assert z[0, 1] < 0


@pytest.mark.parametrize(("n_iterations", "atoms"), [(1, 2), (2, 1)])
def test_exact_recovery_of_planted_code_orthonormal(n_iterations: int, atoms: int) -> None:
    rng = np.random.default_rng(3)
    d = 16
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    codes = np.zeros((10, d))
    for row in codes:
        support = rng.choice(d, 2, replace=False)
        row[support] = rng.uniform(0.3, 1.0, 2)
    b_pre = 0.05 * rng.standard_normal(d)
    x = codes @ Q.T + b_pre
    z = icfl_encode(
        torch.from_numpy(x).float(),
        torch.from_numpy(Q).float(),
        torch.from_numpy(b_pre).float(),
        n_iterations,
        atoms,
    )
    np.testing.assert_allclose(z.numpy(), codes, atol=1e-4)
    assert ((z != 0).numpy() == (codes != 0)).all()


def test_nearly_collinear_selection_stays_finite() -> None:
    a = np.array([1.0, 0.0, 0.0])
    W = unit_columns(np.stack([a, a + 1e-7 * np.array([0, 1.0, 0]), [0, 0, 1.0]], axis=1))
    x = torch.tensor([[1.0, 0.2, 0.1]])
    z = icfl_encode(x, torch.from_numpy(W).float(), torch.zeros(3), 1, 2)
    assert torch.isfinite(z).all() and float(z.abs().max()) < 10


def test_model_encode_decode_and_loss() -> None:
    model = build_model("icfl", 8, 20, 6, atoms_per_iteration=2, seed=0)
    assert isinstance(model, ICFL) and model.n_iterations == 3 and model.sparsity == 6
    norms = torch.linalg.vector_norm(model.W_dec, dim=0)
    torch.testing.assert_close(norms, torch.ones(20))
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    loss, z, x_hat = model.loss(x)
    assert not z.requires_grad and x_hat.shape == (5, 8)
    expected = ((x - (z @ model.W_dec.T + model.b_pre)) ** 2).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.W_dec.grad is not None and model.b_pre.grad is not None
    with pytest.raises(ValueError, match="multiple of atoms_per_iteration"):
        build_model("icfl", 8, 20, 7, atoms_per_iteration=2)


def _model_with_pair(cosine: float, seed: int = 0) -> tuple[ICFL, np.ndarray]:
    rng = np.random.default_rng(10)
    d, m = 32, 16
    W = unit_columns(rng.standard_normal((d, m)))
    u = W[:, 5] - (W[:, 5] @ W[:, 3]) * W[:, 3]
    W[:, 5] = cosine * W[:, 3] + np.sqrt(1 - cosine**2) * u / np.linalg.norm(u)
    model = ICFL(d, m, 1, ICFLSettings(atoms_per_iteration=1), seed=seed)
    with torch.no_grad():
        model.W_dec.copy_(torch.from_numpy(W).float())
    return model, W


def test_resampling_redraws_exactly_one_of_a_correlated_pair() -> None:
    chosen = set()
    for seed in range(12):
        model, W = _model_with_pair(0.99)
        gram = W.T @ W
        assert np.isclose(gram[3, 5], 0.99) and (np.abs(gram - np.eye(16)) < 0.9).sum() == 256 - 2
        generator = torch.Generator().manual_seed(seed)
        assert model.after_step(99, generator) == 0  # not a reset step
        assert model.after_step(100, generator) == 1
        (redrawn,) = model.last_resampled.tolist()
        assert redrawn in (3, 5)
        chosen.add(redrawn)
        after = model.W_dec.detach().double().numpy()
        np.testing.assert_allclose(np.linalg.norm(after, axis=0), 1.0, atol=1e-6)
        kept = [j for j in range(16) if j != redrawn]
        np.testing.assert_allclose(after[:, kept], W[:, kept], atol=1e-6)
        assert abs(after[:, redrawn] @ W[:, redrawn]) < 0.9
    assert chosen == {3, 5}  # which member goes is random


def test_resampling_keeps_one_member_of_a_cluster_and_respects_threshold() -> None:
    model, W = _model_with_pair(0.85)
    assert model.after_step(100, torch.Generator().manual_seed(0)) == 0
    rng = np.random.default_rng(4)
    base = W[:, 0]
    for j in (7, 9):  # three near-duplicates: 0, 7, 9
        W[:, j] = base + 0.01 * rng.standard_normal(32)
    W = unit_columns(W)
    with torch.no_grad():
        model.W_dec.copy_(torch.from_numpy(W).float())
    model.resample_every = 10
    n = model.after_step(10, torch.Generator().manual_seed(0))
    redrawn = model.last_resampled.tolist()
    assert n == 2 == len(set(redrawn)) and set(redrawn) < {0, 7, 9}


def test_model_keeps_its_gram_until_the_decoder_changes() -> None:
    """The Gram path computes G = W^T W once per decoder state: reused across encoding
    batches, recomputed after an optimiser step or a renormalisation."""
    from cellconcepts.dictionary.icfl import decoder_gram

    torch.manual_seed(0)
    model = ICFL(512, 1024, 40, ICFLSettings(atoms_per_iteration=2), seed=0)
    x = torch.randn(256, 512)
    model.encode(x)
    first = model._gram_matrix
    assert first is not None  # at this shape the Gram path is the cheaper one
    model.encode(x[:128])
    assert model._gram_matrix is first
    optimiser = torch.optim.SGD([model.W_dec], lr=0.1)
    model.W_dec.grad = torch.randn_like(model.W_dec)
    optimiser.step()
    codes = model.encode(x)
    assert model._gram_matrix is not first
    torch.testing.assert_close(model._gram_matrix, decoder_gram(model.W_dec))
    expected = icfl_encode(x, model.W_dec, model.b_pre, 20, 2, method="residual")
    same = ((codes != 0) == (expected != 0)).all(dim=1).float().mean()
    assert same > 0.95


def test_the_model_takes_the_encoder_it_is_given() -> None:
    """``encoder`` overrides the cost model: "residual" never forms G, "gram" does at a shape
    where "auto" would not; both give the codes of `icfl_encode` on that path."""
    torch.manual_seed(0)
    model = ICFL(64, 256, 4, ICFLSettings(atoms_per_iteration=1), seed=0)
    x = torch.randn(16, 64)
    model.encode(x)
    assert model._gram_matrix is None  # "auto": the residual path at this shape
    model.encoder = "gram"
    codes = model.encode(x)
    assert model._gram_matrix is not None
    expected = icfl_encode(x, model.W_dec, model.b_pre, 4, 1, method="gram")
    assert torch.equal(codes, expected)
    model.encoder = "residual"
    expected = icfl_encode(x, model.W_dec, model.b_pre, 4, 1, method="residual")
    assert torch.equal(model.encode(x), expected)
    model.encoder = "fast"
    with pytest.raises(ValueError, match="encoder must be one of"):
        model.encode(x)
