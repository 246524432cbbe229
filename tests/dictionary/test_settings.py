"""Each method's settings are one typed object: built from the config, given whole to the model,
saved with it and read back."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from snakemake.utils import validate
from testkit import REPO

from cellconcepts.config import training_settings
from cellconcepts.dictionary.models import build_model, load_model, save_model
from cellconcepts.dictionary.settings import (
    ICFLSettings,
    TopKSettings,
    from_config,
    from_meta,
    own_keys,
    with_options,
)

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def validated(demo_config) -> dict:
    config = copy.deepcopy(demo_config)
    validate(config, str(SCHEMA))
    return config


def test_demo_config_gives_the_schema_defaults(validated):
    """The demo config sets none of the methods' own keys, so its settings are the schema's."""
    for method, cls in (("icfl", ICFLSettings), ("topk", TopKSettings)):
        params = training_settings(validated, "synthetic", method)
        assert from_config(method, params) == cls()
        assert from_config(method, validated["dictionary"]) == cls()


def test_a_dataset_override_reaches_the_model(validated):
    validated["datasets"]["pbmc"]["dictionary"] = {
        "icfl": {"atoms_per_iteration": 4, "selection": "absolute"},
        "learn_b_pre": False,
    }
    validate(validated, str(SCHEMA))
    params = training_settings(validated, "pbmc", "icfl")
    assert set(params["icfl"]) == set(own_keys("icfl"))
    settings = from_config("icfl", params)
    assert settings == ICFLSettings(atoms_per_iteration=4, selection="absolute", learn_b_pre=False)
    model = build_model("icfl", 8, 32, 8, settings=settings)
    assert (model.n_iterations, model.atoms_per_iteration, model.selection) == (2, 4, "absolute")
    assert not model.b_pre.requires_grad


@pytest.mark.parametrize(
    ("method", "settings"),
    [
        ("icfl", ICFLSettings(atoms_per_iteration=1, resample_every=0, learn_b_pre=False)),
        ("topk", TopKSettings(aux_k=4, aux_coef=0.25, resample_every=9)),
    ],
)
def test_settings_are_saved_with_the_model_and_read_back(tmp_path: Path, method, settings):
    model = build_model(method, 8, 16, 4, seed=2, settings=settings)
    assert model.settings is settings
    save_model(model, tmp_path / "m.pt", {"variant": "x"})
    loaded, meta = load_model(tmp_path / "m.pt")
    assert loaded.settings == settings
    assert from_meta(method, meta) == settings


def test_an_older_model_without_a_setting_takes_the_schema_default():
    meta = {"atoms_per_iteration": 1}
    assert from_meta("icfl", meta) == ICFLSettings(atoms_per_iteration=1)


def test_wrong_or_unknown_settings_are_refused():
    with pytest.raises(TypeError, match="no setting \\['atoms_per_iteration'\\]"):
        with_options("topk", atoms_per_iteration=2)
    with pytest.raises(ValueError, match="TopKSettings given for method 'icfl'"):
        build_model("icfl", 8, 16, 4, settings=TopKSettings())
    with pytest.raises(TypeError, match="settings or options, not both"):
        build_model("icfl", 8, 16, 4, settings=ICFLSettings(), selection="absolute")
    with pytest.raises(ValueError, match="method must be one of"):
        with_options("omp")
