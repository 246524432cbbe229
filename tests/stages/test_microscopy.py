"""Microscopy stage functions on small hand-built inputs (the modules they call have their own
tests; these check the glue: image choice, signs, layer choice, tables)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellconcepts.dictionary.models import build_model, decoder_directions, load_model, save_model
from cellconcepts.dictionary.whitening import Whitening, fit_whitening
from cellconcepts.microscopy.extract import check_images_fit
from cellconcepts.microscopy.heatmaps import feature_heats, select_heatmap_images
from cellconcepts.report.tables import label_selectivity
from cellconcepts.stages.embed import choose_layer, embed_images
from cellconcepts.stages.report import label_selectivity as label_selectivity_stage
from cellconcepts.store.images import open_image_store


def _directions(tmp_path):
    """The feature directions in token space of the saved model (decoder through the
    whitening), as the heatmap stages compute them."""
    model, _ = load_model(tmp_path / "model.pt")
    return Whitening.load(tmp_path / "pca.npz").pullback(decoder_directions(model))


def test_select_heatmap_images_picks_most_active_images_of_each_label():
    table = pd.DataFrame(
        {
            "token_id": [f"img{i}" for i in range(6)],
            "group": ["a", "a", "a", "b", "b", "ctrl"],
        }
    )
    codes = sp.csr_matrix(
        np.array(
            [
                [0.5, 0.0],
                [-0.1, 0.0],
                [2.0, 0.0],
                [0.0, -3.0],
                [0.0, -1.0],
                [9.0, 9.0],
            ]
        )
    )
    best = pd.DataFrame(
        {
            "task": ["g", "g", "g", "other"],
            "label": ["a", "b", "ctrl", "a"],
            "best_avg": [0.8, 0.6, 0.1, 0.9],
            "best_feature": [0, 1, 0, 1],
        }
    )
    selected = select_heatmap_images(
        table,
        codes,
        best,
        task={"name": "g", "column": "group"},
        exclude=["ctrl"],
        images_per_label=3,
    )
    # label a: feature 0, image 2 (2.0) then image 0 (0.5); image 1 fires with the minority
    # sign (-0.1), so it is not shown.
    # label b: feature 1, negative codes: image 3 (-3) then image 4 (-1); signs kept.
    assert selected[["label", "feature", "row", "rank"]].values.tolist() == [
        ["a", 0, 2, 0],
        ["a", 0, 0, 1],
        ["b", 1, 3, 0],
        ["b", 1, 4, 1],
    ]
    assert selected["activation"].tolist() == [2.0, 0.5, -3.0, -1.0]
    assert selected["image_id"].tolist() == ["img2", "img0", "img3", "img4"]
    with pytest.raises(ValueError, match="no selectivity rows"):
        select_heatmap_images(
            table,
            codes,
            best,
            task={"name": "x", "column": "group"},
            exclude=[],
            images_per_label=1,
        )


def _model_and_whitening(tmp_path, rng):
    tokens = rng.normal(size=(200, 8)) * np.linspace(3.0, 0.5, 8)
    whitening = fit_whitening(tokens, np.arange(100), "pca", eps_relative=1e-3)
    whitening.save(tmp_path / "pca.npz")
    model = build_model("icfl", whitening.output_dim, 5, 2, atoms_per_iteration=1, seed=0)
    save_model(model, tmp_path / "model.pt", {})
    return whitening, model


def test_feature_heats_follow_the_sign_of_the_codes(tmp_path):
    rng = np.random.default_rng(0)
    whitening, model = _model_and_whitening(tmp_path, rng)
    feature = 3
    direction = whitening.pullback(model.W_dec.detach().double().numpy())[:, feature]
    # One image on a 2x2 grid, then the per-position control centre (a positional offset).
    centre = whitening.mean + rng.normal(size=(2, 2, 8))
    patches = np.empty((2, 2, 2, 8))
    patches[0, 0, 0] = centre[0, 0] + 2 * direction
    patches[0, 0, 1] = centre[0, 1] - direction
    patches[0, 1, 0] = centre[1, 0] + rng.normal(size=8)
    patches[0, 1, 1] = centre[1, 1]
    patches[1] = centre
    positive = pd.DataFrame(
        {"label": ["a"], "feature": [feature], "patch_index": [0], "activation": [1.5]}
    )
    heats = feature_heats(patches, positive, _directions(tmp_path))
    assert heats.shape == (1, 2, 2)
    np.testing.assert_allclose(heats[0, 0], [1.0, -1.0], atol=1e-6)
    assert heats[0, 1, 1] == 0.0
    negative = positive.assign(activation=[-1.5])
    flipped = feature_heats(patches, negative, _directions(tmp_path))
    np.testing.assert_allclose(flipped, -heats, atol=1e-12)


def test_label_selectivity_table(tmp_path):
    for variant, scores in {
        "icfl_pca_k8_seed0": [0.7, 0.4],
        "topk_pca_k8_seed0": [0.5, 0.6],
    }.items():
        pd.DataFrame(
            {
                "task": ["g", "g", "g", "batch"],
                "label": ["a", "b", "ctrl", "a"],
                "best_avg": [*scores, 0.9, 0.99],
                "best_feature": [0, 1, 2, 3],
            }
        ).to_csv(tmp_path / f"{variant}.csv", index=False)
        pd.DataFrame(
            {
                "task": "g",
                "label": ["a", "b", "ctrl"],
                "score": "heldout_avg",
                "p_value": [0.001, 0.5, 0.001],
                "above_null": [scores[0] > 0.6, False, True],
            }
        ).to_csv(tmp_path / f"{variant}_scores.csv", index=False)
    variants = ["icfl_pca_k8_seed0", "topk_pca_k8_seed0"]
    table, fraction = label_selectivity(
        {v: pd.read_csv(tmp_path / f"{v}.csv") for v in variants}, "g", ["ctrl"]
    )
    assert table["label"].tolist() == ["a", "b", "fraction >= 0.5"]
    assert table["icfl_pca_k8_seed0"].tolist() == [0.7, 0.4, 0.5]
    assert table["topk_pca_k8_seed0"].tolist() == [0.5, 0.6, 1.0]
    assert fraction.tolist() == [0.5, 1.0]
    outputs = [tmp_path / f"out{ext}" for ext in (".csv", ".md", ".tex")]
    label_selectivity_stage(
        best_selectivity=[tmp_path / f"{v}.csv" for v in variants],
        label_scores=[tmp_path / f"{v}_scores.csv" for v in variants],
        table=outputs,
        variants=variants,
        task="g",
        exclude=["ctrl"],
    )
    written = pd.read_csv(outputs[0]).set_index("label")
    pd.testing.assert_frame_equal(written.iloc[:3].reset_index(), table)
    # the held-out null row: icfl's a is above null (1 of a, b), topk's is not
    assert written.loc["fraction above null (held out)"].tolist() == [0.5, 0.0]
    assert all(path.stat().st_size > 0 for path in outputs)


def _image_store(path, n=24, size=16, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    np.save(
        path / "images.npy", rng.integers(0, 4000, size=(n, channels, size, size), dtype=np.uint16)
    )
    pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "gene": ["non-targeting" if k % 3 == 0 else f"g{k % 3}" for k in range(n)],
            "plate": [f"p{k % 2}" for k in range(n)],
        }
    ).to_parquet(path / "obs.parquet")


def test_open_image_store_checks_its_files(tmp_path):
    _image_store(tmp_path / "ok")
    store = open_image_store(tmp_path / "ok")
    assert store.images.shape == (24, 2, 16, 16) and store.masks is None
    with pytest.raises(FileNotFoundError, match="images.npy"):
        open_image_store(tmp_path / "missing")
    _image_store(tmp_path / "dup")
    obs = pd.read_parquet(tmp_path / "dup" / "obs.parquet")
    obs.loc[1, "image_id"] = "i0"
    obs.to_parquet(tmp_path / "dup" / "obs.parquet")
    with pytest.raises(ValueError, match="image_id must be unique"):
        open_image_store(tmp_path / "dup")
    obs.iloc[:5].to_parquet(tmp_path / "dup" / "obs.parquet")
    with pytest.raises(ValueError, match="5 rows but"):
        open_image_store(tmp_path / "dup")


def test_choose_layer_takes_the_best_layer_on_the_task(tmp_path):
    rng = np.random.default_rng(1)
    _image_store(tmp_path / "images", n=120)
    genes = pd.read_parquet(tmp_path / "images" / "obs.parquet")["gene"]
    onehot = pd.get_dummies(genes).to_numpy(float)
    # layer 1: noise; layer 2: the gene label plus noise (so it must be chosen).
    noise = rng.normal(size=(120, 6)).astype(np.float32)
    informative = np.hstack([onehot * 3, rng.normal(size=(120, 3))]) + rng.normal(size=(120, 6))
    stacked = tmp_path / "layer_tokens.npy"
    np.save(stacked, np.stack([noise, informative.astype(np.float32)]))
    out = tmp_path / "out"
    out.mkdir()

    def run(name: str, layer, layer_task: str = "gene") -> None:
        choose_layer(
            image_obs=tmp_path / "images" / "obs.parquet",
            layer_tokens=stacked,
            tokens=out / name / "tokens.npy",
            obs=out / name / "obs.parquet",
            choice=out / f"{name}.json",
            table=[out / f"{name}{ext}" for ext in (".csv", ".md", ".tex")],
            figure=[out / f"{name}{ext}" for ext in (".png", ".pdf")],
            layers=[1, 2],
            layer=layer,
            layer_task=layer_task,
            tasks=[{"name": "gene", "column": "gene"}],
            control={"column": "gene", "values": ["non-targeting"]},
            split={"test_fraction": 0.2, "seed": 0},
            probe={"test_fraction": 0.25, "max_iter": 200, "C": 1.0, "max_train": None, "seed": 0},
        )

    run("best", "best")
    choice = json.loads((out / "best.json").read_text())
    assert choice["layer"] == 2 and choice["best_layer"] == 2
    stored = np.load(out / "best" / "tokens.npy")
    np.testing.assert_array_equal(stored, informative.astype(np.float32))
    obs = pd.read_parquet(out / "best" / "obs.parquet")
    assert obs["token_id"].tolist() == [f"i{k}" for k in range(120)]
    assert obs["is_control"].tolist() == (genes == "non-targeting").tolist()
    table = pd.read_csv(out / "best.csv")
    assert table.set_index("layer")["chosen"].to_dict() == {1: False, 2: True}
    assert (out / "best.pdf").exists() and (out / "best.png").exists()
    # A fixed layer is used even when another probes better.
    run("fixed", 1)
    assert json.loads((out / "fixed.json").read_text())["layer"] == 1
    with pytest.raises(ValueError, match="layer_task"):
        run("bad", "best", layer_task="nope")


def test_embed_layers_and_a_user_checkpoint(tmp_path):
    from cellconcepts.microscopy import vit

    torch.manual_seed(0)
    _image_store(tmp_path / "images", n=10, size=16, channels=2)
    architecture = {
        "img_size": 16,
        "patch_size": 8,
        "in_chans": 2,
        "embed_dim": 16,
        "depth": 2,
        "num_heads": 2,
    }
    encoder = vit.ViTEncoder(vit.ViTConfig.from_dict(architecture))
    # A timm-layout weights file under a wrapper prefix, described by the config.
    weights = tmp_path / "weights.pth"
    torch.save({"encoder." + k: v for k, v in encoder.state_dict().items()}, weights)

    def run(layers, out):
        embed_images(
            images=tmp_path / "images" / "images.npy",
            image_obs=tmp_path / "images" / "obs.parquet",
            encoder=weights,
            layer_tokens=out,
            layers=layers,
            architecture=architecture,
            execution={"device": "cpu", "batch_size": 4},
        )

    run([1, 2], tmp_path / "layers.npy")
    stacked = np.load(tmp_path / "layers.npy")
    assert stacked.shape == (2, 10, 16)
    images = np.load(tmp_path / "images" / "images.npy")
    with torch.inference_mode(), vit.capture_layers(encoder.eval(), [2]) as captured:
        encoder(vit.self_standardize(images))
    expected = captured[2][:, encoder.n_prefix :].mean(dim=1).numpy()
    np.testing.assert_allclose(stacked[1], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="microscopy.layer"):
        run([5], tmp_path / "bad.npy")
    assert not (tmp_path / "bad.npy").exists()
    with pytest.raises(ValueError, match="model expects"):
        check_images_fit(images, vit.ViTConfig.from_dict({**architecture, "in_chans": 3}), "x")
