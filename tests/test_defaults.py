"""Each default lives in the config schema: a keyword default in the code that stands for a config
key must equal the schema's default for it (`cellconcepts.defaults`)."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from cellconcepts.defaults import schema_default, schema_node
from cellconcepts.dictionary.encode import encode_tokens
from cellconcepts.dictionary.models import build_model
from cellconcepts.dictionary.settings import ICFLSettings, TopKSettings
from cellconcepts.dictionary.training import TrainConfig
from cellconcepts.dictionary.whitening import fit_whitening
from cellconcepts.enrich.gene_lists import expression_gene_lists, selective_gene_lists
from cellconcepts.evaluate.probing import ProbeSettings
from cellconcepts.microscopy.mae import MAEConfig, train_mae
from cellconcepts.microscopy.vit import ViTConfig
from cellconcepts.report.browser import ModelView
from cellconcepts.sources.cellpainting import simulate_screen
from cellconcepts.sources.scrna import train_expression_autoencoder
from cellconcepts.sources.superposition import simulate_superposition
from cellconcepts.store.image_sources import ImageSource
from cellconcepts.store.obs import assign_split

# Code whose keyword defaults stand for config keys, and the schema sections (searched in order)
# whose keys they are: every parameter with a default whose name is a key of one of them is
# compared. `expected` lists parameters that must be among those compared, so a renamed key
# cannot silently drop out of the check.
CASES = {
    # Every field of the methods' settings is a config key.
    "ICFLSettings": (
        ICFLSettings,
        ["dictionary.icfl", "dictionary"],
        {f.name for f in fields(ICFLSettings)},
    ),
    "TopKSettings": (
        TopKSettings,
        ["dictionary.topk", "dictionary"],
        {f.name for f in fields(TopKSettings)},
    ),
    "TrainConfig": (
        TrainConfig,
        ["dictionary.train"],
        {"device", "log_every", "checkpoint_every", "dead_window", "dead_fraction"},
    ),
    "ProbeSettings": (
        ProbeSettings,
        ["evaluate.probe"],
        {"test_fraction", "max_iter", "C", "max_train", "seed"},
    ),
    "ImageSource": (
        ImageSource,
        ["datasets.*.microscopy.images"],
        {"illumination", "illumination_sigma", "normalize", "plate_column", "id_column"},
    ),
    "encode_tokens": (encode_tokens, ["encode"], {"batch_size"}),
    "ModelView": (ModelView, ["enrich"], {"fdr"}),
    "fit_whitening": (fit_whitening, ["whitening"], {"eps_relative", "n_components"}),
    "simulate_superposition": (simulate_superposition, ["datasets.*.synthetic"], {"n_atoms"}),
    "simulate_screen": (simulate_screen, ["datasets.*.microscopy.simulate"], {"sites_per_well"}),
    "train_expression_autoencoder": (
        train_expression_autoencoder,
        ["datasets.*.scrna.autoencoder"],
        {"latent_dim", "epochs", "lr"},
    ),
    "train_mae": (
        train_mae,
        ["datasets.*.microscopy.model.mae"],
        {"weight_decay", "augment"},
    ),
    # Every field of the two microscopy configs is a config key.
    "MAEConfig": (
        MAEConfig,
        ["datasets.*.microscopy.model.mae"],
        {f.name for f in fields(MAEConfig)},
    ),
    "ViTConfig": (
        ViTConfig,
        ["datasets.*.microscopy.model.architecture"],
        {f.name for f in fields(ViTConfig)},
    ),
    "expression_gene_lists": (expression_gene_lists, ["enrich.expression"], {"min_cells"}),
    "selective_gene_lists": (selective_gene_lists, ["enrich.screen"], {"top_n"}),
    "assign_split": (assign_split, ["datasets.*.split"], {"seed"}),
}


def code_defaults(code) -> dict[str, object]:
    """Parameters with a default of a function, class constructor or dataclass."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(code).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def compared(code, sections: list[str]) -> dict[str, tuple[str, object, object]]:
    """For every defaulted parameter named as a key of ``sections``: (key, code default, schema
    default); a key without a schema default counts as None (an optional key)."""
    pairs = {}
    for name, default in code_defaults(code).items():
        key = next((f"{s}.{name}" for s in sections if schema_node(f"{s}.{name}")), None)
        if key is None:
            continue
        try:
            expected = schema_default(key)
        except KeyError:
            expected = None
        pairs[name] = (key, default, expected)
    return pairs


@pytest.mark.parametrize("name", CASES)
def test_code_defaults_equal_the_schema(name: str) -> None:
    code, sections, expected_names = CASES[name]
    pairs = compared(code, sections)
    assert expected_names <= set(pairs), f"{name}: not compared: {expected_names - set(pairs)}"
    disagree = {p: (k, d, e) for p, (k, d, e) in pairs.items() if d != e or type(d) is not type(e)}
    assert not disagree, f"{name}: code default != schema default: {disagree}"


def test_the_paper_defaults() -> None:
    """The schema's defaults follow the paper: b_pre learned by both methods (eqs. 3 and 4),
    ICFL re-draws correlated columns every 100 steps at cosine 0.9, TopK does not, no AuxK."""
    assert schema_default("dictionary.learn_b_pre") is True
    assert schema_default("dictionary.icfl.resample_every") == 100
    assert schema_default("dictionary.icfl.resample_threshold") == 0.9
    assert schema_default("dictionary.topk.resample_every") == 0
    assert schema_default("dictionary.topk.aux_k") is None
    # L must divide the default sparsity (ICFL's J * L).
    assert all(
        k % schema_default("dictionary.icfl.atoms_per_iteration") == 0
        for k in schema_default("dictionary.sparsity")
    )
    for method in ("icfl", "topk"):
        model = build_model(method, 8, 16, 8)
        assert model.learn_b_pre and model.b_pre.requires_grad


def test_schema_lookup_names_a_missing_key() -> None:
    with pytest.raises(KeyError, match="not a key"):
        schema_default("dictionary.icfl.no_such_key")
    with pytest.raises(KeyError, match="no default"):
        schema_default("datasets.*.microscopy.images.files")
    assert schema_default("datasets.*.split.test_fraction") == 0.2  # via a dataset and a $ref
    assert schema_default("datasets.*.microscopy.images.illumination") == "none"  # via oneOf
