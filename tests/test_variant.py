"""A model's identity is spelled in one place: `cellconcepts.variant`."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pandas as pd
import pytest
from testkit import REPO

from cellconcepts.defaults import schema_node
from cellconcepts.variant import METHODS, WHITENINGS, Variant, VariantError


@pytest.mark.parametrize("name", ["icfl_pca_k8_seed0", "topk_none_k100_seed12"])
def test_name_round_trips(name):
    assert Variant.parse(name).name == name


def test_parse_types_its_fields():
    v = Variant.parse("topk_none_k100_seed12")
    assert (v.method, v.whitening, v.sparsity, v.seed) == ("topk", "none", 100, 12)
    assert v.setting == "topk_none_k100"


@pytest.mark.parametrize(
    "name", ["icfl_zca_k8_seed0", "sae_pca_k8_seed0", "icfl_pca_k8", "icfl_pca_kx_seed0", ""]
)
def test_parse_refuses_other_names_saying_the_form(name):
    with pytest.raises(VariantError, match=r"not of the form '<icfl\|topk>_<pca\|none>_k<spar"):
        Variant.parse(name)


def test_constructor_refuses_unknown_method_and_whitening():
    with pytest.raises(VariantError, match="method"):
        Variant("omp", "pca", 8, 0)
    with pytest.raises(VariantError, match="whitening"):
        Variant("icfl", "zca", 8, 0)


def test_wildcards_and_their_constraints_describe_the_same_names():
    """A job's wildcards give back the variant, and the constraints Snakemake gets accept
    exactly the names `parse` accepts."""
    v = Variant("icfl", "pca", 16, 2)
    wildcards = SimpleNamespace(method="icfl", whitening="pca", sparsity="16", seed="2")
    assert Variant.from_wildcards(wildcards) == v
    constraints = Variant.wildcard_constraints()
    pattern = Variant.TEMPLATE.format(**{k: f"(?:{r})" for k, r in constraints.items()})
    for name in (
        "icfl_pca_k16_seed2",
        "topk_none_k8_seed0",
        "icfl_zca_k8_seed0",
        "icfl_pca_k_seed0",
    ):
        by_constraints = re.fullmatch(pattern, name) is not None
        by_parse = Variant.pattern().match(name) is not None
        assert by_constraints == by_parse, name


def test_parse_column_gives_typed_fields():
    parts = pd.DataFrame(Variant.parse_column(["icfl_pca_k8_seed0", "topk_none_k16_seed2"]))
    assert parts.to_dict("list") == {
        "method": ["icfl", "topk"],
        "whitening": ["pca", "none"],
        "sparsity": [8, 16],
        "seed": [0, 2],
    }


def test_schema_enums_are_the_variant_fields():
    assert schema_node("dictionary.methods")["items"]["enum"] == list(METHODS)
    assert schema_node("datasets.*.dictionary.methods")["items"]["enum"] == list(METHODS)
    assert schema_node("whitening.methods")["items"]["enum"] == list(WHITENINGS)


# Code that may spell a model's name: this module's tests and the module itself. Tests build
# names with f-strings freely; the package, rules, scripts and benchmarks must not.
_SPELLED = re.compile(
    r"icfl\|topk|pca\|none|_k\{[^}]*\}_seed\{|k\(\\d\+\)_seed|_k\\d\+_seed|\"icfl_pca_\""
)


def test_nothing_else_spells_the_pattern():
    sources = [
        *(REPO / "workflow").rglob("*.py"),
        *(REPO / "workflow" / "rules").glob("*.smk"),
        REPO / "workflow" / "Snakefile",
        *(REPO / "scripts").glob("*.py"),
        *(REPO / "benchmarks").glob("*.py"),
    ]
    offenders = [
        f"{path.relative_to(REPO)}:{i}"
        for path in sources
        if path.name != "variant.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if _SPELLED.search(line)
    ]
    assert not offenders, offenders
