"""TopK SAE: activation pattern, decoding, training signal, AuxK; model save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cellconcepts.dictionary.icfl import ICFL
from cellconcepts.dictionary.models import build_model, decoder_directions, load_model, save_model
from cellconcepts.dictionary.settings import TopKSettings
from cellconcepts.dictionary.topk import TopKSAE
from cellconcepts.dictionary.topk import _SelectedPreActivations as _Selected


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True)


def test_init_ties_encoder_to_decoder() -> None:
    model = build_model("topk", 16, 64, 5, seed=3)
    assert isinstance(model, TopKSAE) and model.sparsity == 5 and model.aux_k is None
    torch.testing.assert_close(model.W_enc.detach(), model.W_dec.detach().T)
    torch.testing.assert_close(torch.linalg.vector_norm(model.W_dec, dim=0), torch.ones(64))
    assert not model.b_enc.detach().any() and not model.b_pre.detach().any()


def test_exactly_k_active_non_negative_and_the_top_ones() -> None:
    model = TopKSAE(16, 64, 5, seed=0)
    with torch.no_grad():
        model.b_pre.copy_(0.01 * torch.arange(16.0))
        model.b_enc.copy_(0.01 * torch.arange(64.0))
    x = unit_rows(32, 16, 1)
    z = model.encode(x).detach().numpy()
    pre = (x.numpy() - model.b_pre.detach().numpy()) @ model.W_enc.detach().numpy().T
    pre = pre + model.b_enc.detach().numpy()
    top = np.argsort(-pre, axis=1)[:, :5]
    expected = np.zeros_like(pre)
    np.put_along_axis(expected, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    assert ((z != 0).sum(1) == 5).all() and (z >= 0).all()
    np.testing.assert_allclose(z, expected, atol=1e-6)


def test_relu_can_switch_off_negative_top_values() -> None:
    model = TopKSAE(8, 16, 3, seed=0)
    with torch.no_grad():
        model.b_enc.fill_(-10.0)
    z = model.encode(unit_rows(4, 8, 0))
    assert not z.detach().any()


def test_decode_shape_and_value() -> None:
    model = TopKSAE(8, 16, 3, seed=0)
    with torch.no_grad():
        model.b_pre.copy_(torch.linspace(-1, 1, 8))
    z = model.encode(unit_rows(6, 8, 2))
    x_hat = model.decode(z)
    assert x_hat.shape == (6, 8)
    expected = z.detach().numpy() @ model.W_dec.detach().numpy().T + np.linspace(-1, 1, 8)
    np.testing.assert_allclose(x_hat.detach().numpy(), expected, atol=1e-6)


def test_loss_decreases_and_decoder_stays_unit_norm() -> None:
    model = TopKSAE(16, 64, 4, seed=0)
    x = unit_rows(256, 16, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        loss, _, _ = model.loss(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert model.after_step(step + 1, generator) == 0
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    norms = torch.linalg.vector_norm(model.W_dec, dim=0)
    torch.testing.assert_close(norms, torch.ones(64), atol=1e-6, rtol=0)


def test_auxk_adds_positive_term_and_trains_dead_latents() -> None:
    x = unit_rows(8, 16, 4)
    plain = TopKSAE(16, 64, 4, seed=0)
    aux = TopKSAE(16, 64, 4, TopKSettings(aux_k=8, aux_coef=0.5), seed=0)
    z = plain.encode(x)
    dead = (z == 0).all(0)  # never selected on this batch
    assert 8 < int(dead.sum()) < 64

    loss_plain, _, _ = plain.loss(x, dead_mask=dead)
    assert plain.last_aux_loss is None  # aux_k unset: AuxK off even when given a mask
    loss_aux, _, _ = aux.loss(x, dead_mask=dead)
    assert aux.last_aux_loss is not None and float(aux.last_aux_loss) > 0
    torch.testing.assert_close(loss_aux, loss_plain + 0.5 * aux.last_aux_loss)
    loss_none, _, _ = aux.loss(x)  # no mask: off
    torch.testing.assert_close(loss_none, loss_plain)

    loss_plain.backward()
    assert float(plain.W_enc.grad[dead].abs().sum()) == 0.0
    aux.loss(x, dead_mask=dead)[0].backward()
    assert float(aux.W_enc.grad[dead].abs().sum()) > 0.0


@pytest.mark.parametrize("method", ["icfl", "topk"])
def test_save_load_round_trip(tmp_path: Path, method: str) -> None:
    options = (
        {"aux_k": 6, "learn_b_pre": False, "resample_every": 7}
        if method == "topk"
        else {"atoms_per_iteration": 2}
    )
    model = build_model(method, 8, 24, 4, seed=5, **options)
    with torch.no_grad():
        model.b_pre.add_(0.5)
    path = tmp_path / "model.pt"
    save_model(model, path, {"variant": "x", "whitening": tmp_path / "w.npz", "n": np.int64(3)})
    loaded, meta = load_model(path)
    assert type(loaded) is type(model)
    assert meta["method"] == method and meta["sparsity"] == 4 and meta["n"] == 3
    assert meta["whitening"] == str(tmp_path / "w.npz")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    if isinstance(loaded, ICFL):
        assert loaded.n_iterations == 2 and loaded.atoms_per_iteration == 2
    else:
        assert loaded.aux_k == 6 and not loaded.learn_b_pre and loaded.resample_every == 7
    assert loaded.config() == model.config()
    directions = decoder_directions(loaded)
    assert directions.dtype == np.float64 and directions.shape == (8, 24)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=0), 1.0)
    assert not list(tmp_path.glob(".*tmp*"))


def test_build_model_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        build_model("pca", 8, 16, 4)


@pytest.mark.parametrize("sparse_products", [None, True, False])
@pytest.mark.parametrize("method", ["icfl", "topk"])
def test_training_loss_decodes_the_selected_columns_like_the_dense_product(
    method: str, sparse_products: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU the loss decodes k gathered columns per token (`decode_selected`) and TopK's
    encoder gradient flows through the selected pre-activations alone; the loss and every
    parameter's gradient equal those of the dense z @ W_dec^T with autograd through the dense
    pre-activations, recomputed here (float64). Repeated atoms (ICFL may pick one twice) add
    up in both. ``sparse_products`` False takes the dense products (other devices' default)."""
    torch.manual_seed(0)
    options = {"aux_k": 5} if method == "topk" else {"atoms_per_iteration": 2}
    model = build_model(method, 12, 40, 6, seed=1, **options).double()
    model.sparse_products = sparse_products
    gathers = []  # the gathered products taken: decoder columns, TopK's selected entries
    for owner, name in ((torch.nn.functional, "embedding_bag"), (_Selected, "apply")):
        original = getattr(owner, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            gathers.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    with torch.no_grad():  # non-zero offsets: TopK's encoder gradient has a b_pre term
        model.b_pre.copy_(torch.linspace(-0.3, 0.3, 12, dtype=torch.float64))
        if method == "topk":
            model.b_enc.copy_(torch.linspace(-0.1, 0.2, 40, dtype=torch.float64))
    x = torch.randn(30, 12, dtype=torch.float64)
    dead = torch.zeros(40, dtype=torch.bool)
    dead[::3] = True
    kwargs = {"dead_mask": dead} if method == "topk" else {}
    loss, z, x_hat = model.loss(x, **kwargs)
    loss.backward()
    expected = [] if sparse_products is False else ["embedding_bag"] * (1 + (method == "topk"))
    if method == "topk" and sparse_products is not False:
        expected += ["apply", "apply"]  # the selection and AuxK's
    assert sorted(gathers) == sorted(expected)
    sparse_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    if method == "topk":
        pre = model.pre_activations(x)
        top = torch.topk(pre, 6, dim=-1)
        codes = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        masked = pre.masked_fill(~dead, float("-inf"))
        top_aux = torch.topk(masked, 5, dim=-1)
        aux_codes = torch.zeros_like(pre).scatter(-1, top_aux.indices, top_aux.values.relu())
    else:
        codes = z.detach()
        assert any(len(set(row)) < 6 for row in model.select(x)[0].tolist())
    dense_hat = codes @ model.W_dec.T + model.b_pre
    dense_loss = (x - dense_hat).pow(2).sum(-1).mean()
    if method == "topk":
        residual = (x - dense_hat).detach()
        mse = (aux_codes @ model.W_dec.T - residual).pow(2).sum(-1).mean()
        variance = (residual - residual.mean(0)).pow(2).sum(-1).mean()
        dense_loss = dense_loss + model.aux_coef * mse / variance
    dense_loss.backward()

    torch.testing.assert_close(x_hat, dense_hat, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, dense_loss, rtol=1e-12, atol=1e-12)
    for name, grad in sparse_grads.items():
        torch.testing.assert_close(grad, getattr(model, name).grad, rtol=1e-10, atol=1e-12)
    assert set(sparse_grads) == {n for n, p in model.named_parameters() if p.grad is not None}


def test_pre_activations_and_their_gradients_follow_the_textbook_formula() -> None:
    """W_enc x + (b_enc - W_enc b_pre), as computed, equals W_enc (x - b_pre) + b_enc in value
    and in the gradient of every parameter (float64, non-zero biases)."""
    model = TopKSAE(12, 40, 6, seed=2).double()
    with torch.no_grad():
        model.b_pre.copy_(torch.linspace(-0.5, 0.5, 12, dtype=torch.float64))
        model.b_enc.copy_(torch.linspace(-0.2, 0.3, 40, dtype=torch.float64))
    x = torch.randn(30, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    weights = torch.randn(30, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    (model.pre_activations(x) * weights).sum().backward()
    computed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    textbook = (x - model.b_pre) @ model.W_enc.T + model.b_enc
    (textbook * weights).sum().backward()

    torch.testing.assert_close(model.pre_activations(x), textbook, rtol=1e-12, atol=1e-12)
    assert set(computed) == {"W_enc", "b_enc", "b_pre"}
    for name, grad in computed.items():
        torch.testing.assert_close(grad, getattr(model, name).grad, rtol=1e-12, atol=1e-12)
