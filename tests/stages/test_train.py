"""Stage functions: training reruns under Snakemake (outputs deleted, checkpoints kept)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from snakemake.utils import validate
from testkit import REPO

from cellconcepts.config import training_settings
from cellconcepts.dictionary.models import load_model
from cellconcepts.stages.train import checkpoint_signature, train_dictionary
from cellconcepts.stages.whiten import fit_whitening
from cellconcepts.store.layout import TokenFiles
from cellconcepts.store.tokens import write_token_store

VARIANT = "icfl_pca_k4_seed0"


@pytest.fixture
def store_and_whitening(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(600, 8)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "token_id": [f"t{i}" for i in range(600)],
            "is_control": np.arange(600) < 200,
            "split": np.where(np.arange(600) % 5 == 0, "test", "train"),
        }
    )
    store = TokenFiles.of(tmp_path / "tokens")
    write_token_store(store, tokens, obs)
    whitening = tmp_path / "pca.npz"
    fit_whitening(
        tokens=store.tokens,
        obs=store.obs,
        whitening=whitening,
        method="pca",
        eps_relative=1e-3,
        n_components=None,
    )
    return store, whitening


@pytest.fixture
def settings() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    config["dictionary"]["n_features"] = 16
    config["dictionary"]["icfl"]["atoms_per_iteration"] = 2
    config["dictionary"]["train"].update(steps=60, batch_size=64)
    return training_settings(config, "synthetic", "icfl")


EXECUTION = {"device": "cpu", "log_every": 10, "checkpoint_every": 20}


def _train(
    store: TokenFiles,
    whitening: Path,
    settings: dict,
    out: Path,
    execution: dict = EXECUTION,
) -> tuple[dict, pd.DataFrame]:
    out.mkdir(parents=True, exist_ok=True)
    # Snakemake deletes declared outputs before a job runs; checkpoints live elsewhere.
    for name in ("model.pt", "metrics.csv", "dead.csv"):
        (out / name).unlink(missing_ok=True)
    train_dictionary(
        tokens=store.tokens,
        obs=store.obs,
        whitening=whitening,
        model=out / "model.pt",
        metrics=out / "metrics.csv",
        dead=out / "dead.csv",
        variant=VARIANT,
        settings=settings,
        checkpoint_dir=out.parent / "checkpoints",
        threads=1,
        execution=execution,
    )
    model, _ = load_model(out / "model.pt")
    return model.state_dict(), pd.read_csv(out / "metrics.csv")


def test_identical_rerun_resumes_to_the_same_model_with_the_full_curve(
    store_and_whitening, settings, tmp_path
):
    store, whitening = store_and_whitening
    first, metrics = _train(store, whitening, settings, tmp_path / "run")
    again, metrics_again = _train(store, whitening, settings, tmp_path / "run")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert metrics.step.tolist() == list(range(10, 61, 10))
    pd.testing.assert_frame_equal(metrics, metrics_again)


def test_rerun_with_other_settings_trains_afresh(store_and_whitening, settings, tmp_path):
    store, whitening = store_and_whitening
    first, _ = _train(store, whitening, settings, tmp_path / "run")
    changed = copy.deepcopy(settings)
    changed["train"]["lr"] = settings["train"]["lr"] * 3
    second, metrics = _train(store, whitening, changed, tmp_path / "run")
    assert not torch.equal(first["W_dec"], second["W_dec"])
    assert metrics.step.tolist() == list(range(10, 61, 10))
    assert len(list((tmp_path / "checkpoints").iterdir())) == 2


def test_cadence_is_not_part_of_the_run(store_and_whitening, settings, tmp_path):
    """Log and checkpoint cadence are execution settings: a rerun with others resumes the
    finished run instead of training again (same model, same curve)."""
    store, whitening = store_and_whitening
    first, metrics = _train(store, whitening, settings, tmp_path / "run")
    cadence = {**EXECUTION, "log_every": 7, "checkpoint_every": 9}
    again, metrics_again = _train(store, whitening, settings, tmp_path / "run", cadence)
    assert all(torch.equal(first[k], again[k]) for k in first)
    pd.testing.assert_frame_equal(metrics, metrics_again)
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1


def test_signature_follows_settings_and_inputs(store_and_whitening, settings, tmp_path):
    store, whitening = store_and_whitening
    base = checkpoint_signature(VARIANT, settings, 8, whitening, store)
    assert checkpoint_signature(VARIANT, copy.deepcopy(settings), 8, whitening, store) == base
    other = copy.deepcopy(settings)
    other["learn_b_pre"] = not settings["learn_b_pre"]
    assert checkpoint_signature(VARIANT, other, 8, whitening, store) != base
    refit = tmp_path / "none.npz"
    fit_whitening(
        tokens=store.tokens,
        obs=store.obs,
        whitening=refit,
        method="none",
        eps_relative=1e-3,
        n_components=None,
    )
    assert checkpoint_signature(VARIANT, settings, 8, refit, store) != base


@pytest.mark.parametrize("method", ["icfl", "topk"])
def test_both_methods_read_learn_b_pre_and_their_own_redraws(method):
    """`dictionary.learn_b_pre` applies to ICFL and TopK alike; each method's re-draws are its
    own (`dictionary.<method>.resample_every`), as is the rest of its section."""
    from cellconcepts.stages.train import _dictionary
    from cellconcepts.variant import Variant

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dictionary"].update(learn_b_pre=False, topk={"resample_every": 50, "aux_k": 4})
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    settings = training_settings(config, "synthetic", method)
    model = _dictionary(Variant.parse(f"{method}_pca_k8_seed3"), settings, input_dim=8)
    assert not model.learn_b_pre and model.seed == 3
    assert model.resample_every == (100 if method == "icfl" else 50)
    assert model.config()["aux_k" if method == "topk" else "atoms_per_iteration"] == (
        4 if method == "topk" else 2
    )
