"""A malformed config fails before any job runs, with a message naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from snakemake_interface_common.exceptions import WorkflowError
from testkit import REPO, run_snakemake

from cellconcepts.config import ConfigError, check_config, deep_merge, variants

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _validated(config: dict) -> dict:
    config = copy.deepcopy(config)
    validate(config, str(SCHEMA))
    return config


def test_demo_config_is_valid(demo_config):
    config = _validated(demo_config)
    check_config(config, REPO, SCHEMA)
    assert [v.name for v in variants(config, "synthetic")] == [
        f"{method}_{whitening}_k8_seed{seed}"
        for method in ("icfl", "topk")
        for whitening in ("pca", "none")
        for seed in (0, 1, 2)
    ]
    # methods x whitening x sparsity x seeds: three seeds of every variant of every dataset
    assert len(variants(config, "pbmc")) == 2 * 2 * 3 * 3
    assert len(variants(config, "cellpainting")) == 2 * 2 * 1 * 3


def test_schema_fills_defaults(demo_config):
    config = _validated(demo_config)
    assert config["dictionary"]["train"]["dead_window"] == 1000
    assert config["dictionary"]["topk"]["aux_k"] is None
    assert config["dictionary"]["learn_b_pre"] is True  # the paper's: b_pre learned
    assert config["dictionary"]["topk"]["resample_every"] == 0
    assert config["datasets"]["synthetic"]["tasks"][2]["group_by"] is None


def test_dataset_override_merges_into_global(demo_config):
    config = _validated(demo_config)
    from cellconcepts.config import dictionary_settings

    pbmc = dictionary_settings(config, "pbmc")
    assert pbmc["n_features"] == 128
    assert pbmc["train"]["steps"] == 1500
    assert pbmc["train"]["lr"] == config["dictionary"]["train"]["lr"]
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_override_with_unknown_key_names_it(demo_config):
    config = _validated(demo_config)
    config["datasets"]["pbmc"]["dictionary"]["train"]["stepz"] = 3
    with pytest.raises(ConfigError, match=r"datasets\.pbmc\.dictionary\.train.*stepz"):
        check_config(config, REPO, SCHEMA)


def test_learn_b_pre_lives_in_the_dictionary_section_for_both_methods(demo_config):
    """The old key `dictionary.icfl.learn_b_pre` is refused, globally and per dataset."""
    config = copy.deepcopy(demo_config)
    config["dictionary"]["icfl"] = {"learn_b_pre": False}
    with pytest.raises(WorkflowError, match="'learn_b_pre' was unexpected"):
        validate(config, str(SCHEMA))
    config = _validated(demo_config)
    config["datasets"]["pbmc"]["dictionary"]["icfl"] = {"learn_b_pre": False}
    with pytest.raises(ConfigError, match=r"datasets\.pbmc\.dictionary\.icfl.*learn_b_pre"):
        check_config(config, REPO, SCHEMA)
    config["datasets"]["pbmc"]["dictionary"]["icfl"] = {}
    config["datasets"]["pbmc"]["dictionary"]["learn_b_pre"] = False
    check_config(config, REPO, SCHEMA)


def test_icfl_sparsity_must_be_multiple_of_atoms_per_iteration(demo_config):
    config = _validated(demo_config)
    config["dictionary"]["sparsity"] = [9]
    with pytest.raises(ConfigError, match="sparsity 9 is not a multiple"):
        check_config(config, REPO, SCHEMA)


def _tiny_user_dataset(path: str) -> dict:
    return {
        "kind": "tokens",
        "tokens": {"path": path},
        "tasks": [{"name": "cell_type", "column": "cell_type"}],
    }


def test_repeated_embedding_columns_are_refused(tmp_path: Path, demo_config):
    import pandas as pd

    config = _validated(demo_config)
    pd.DataFrame({"e0": [0.5], "e1": [1.5], "cell_type": ["T"]}).to_parquet(
        tmp_path / "emb.parquet"
    )
    config["datasets"] = {"mine": _tiny_user_dataset("emb.parquet")}
    config["datasets"]["mine"]["tokens"]["embedding_columns"] = ["e0", "e1", "e0"]
    config = _validated(config)
    with pytest.raises(ConfigError, match=r"mine\.tokens\.embedding_columns: 'e0' listed more"):
        check_config(config, tmp_path, SCHEMA)
    config["datasets"]["mine"]["tokens"]["embedding_columns"] = ["e0", "e1"]
    config["dictionary"]["sparsity"] = [2]  # at most the 2 dimensions
    check_config(config, tmp_path, SCHEMA)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["dictionary"].update(n_feature=3), "'n_feature' was unexpected"),
        (lambda c: c["dictionary"].update(n_features="many"), "'many' is not of type 'integer'"),
        (lambda c: c["whitening"].update(methods=["zca"]), "'zca' is not one of"),
        (
            lambda c: c["datasets"].update(mine=_tiny_user_dataset("no/such/embeddings.h5ad")),
            "datasets.mine.tokens.path: input file 'no/such/embeddings.h5ad' does not exist",
        ),
    ],
    ids=["unknown-key", "wrong-type", "bad-enum", "missing-input"],
)
def test_bad_config_fails_before_any_job(tmp_path: Path, demo_config, mutate, expected):
    config = copy.deepcopy(demo_config)
    mutate(config)
    result = run_snakemake(tmp_path, config, "--cores", "1", timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert expected in output, output[-2000:]
    assert not (tmp_path / "results").exists(), "no job may run on a bad config"


def test_schema_yaml_is_loadable():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert schema["additionalProperties"] is False


def test_paper_scale_configs_are_valid_at_the_papers_width():
    from cellconcepts.config import deep_merge

    paper = yaml.safe_load((REPO / "config" / "paper_scale.yaml").read_text())
    cpu = deep_merge(paper, yaml.safe_load((REPO / "config" / "paper_scale_cpu.yaml").read_text()))
    for config in (_validated(paper), _validated(cpu)):
        check_config(config, REPO, SCHEMA)
        (variant,) = [v for v in variants(config, "paper") if v.name == "icfl_pca_k100_seed0"]
        assert config["dictionary"]["n_features"] == 8192
        assert config["datasets"]["paper"]["synthetic"]["n_dims"] == 1024
    assert paper["dictionary"]["train"] == {
        "steps": 300000,
        "batch_size": 8192,
        "lr": 0.00005,
        "dead_window": 1000,
    }
    assert cpu["datasets"]["paper"]["synthetic"]["n_tokens"] == 100000
    assert cpu["dictionary"]["train"]["lr"] == 0.00005  # the overlay keeps what it does not set


def test_openphenom_example_config_matches_the_encoder_it_names(tmp_path):
    from cellconcepts.microscopy.vit import ViTConfig, openphenom_config

    config = _validated(yaml.safe_load((REPO / "config" / "openphenom_rxrx3.yaml").read_text()))
    section = config["datasets"]["rxrx3"]["microscopy"]
    assert ViTConfig.from_dict(section["model"]["architecture"]) == openphenom_config()
    # RxRx3-core's layout: 512-px planes cut into the encoder's 256-px tiles.
    assert section["images"]["tile"] == section["model"]["architecture"]["img_size"]
    assert len(section["images"]["channels"]) == section["model"]["architecture"]["in_chans"]
    # Its inputs are the user's to fetch: the check names the missing metadata table.
    with pytest.raises(ConfigError, match=r"datasets\.rxrx3\.microscopy\.images\.metadata"):
        check_config(config, tmp_path, SCHEMA)
    (tmp_path / "data" / "rxrx3_core").mkdir(parents=True)
    (tmp_path / "data" / "rxrx3_core" / "metadata_rxrx3_core.csv").write_text("well_id\n")
    with pytest.raises(ConfigError, match=r"microscopy\.model\.checkpoint"):
        check_config(config, tmp_path, SCHEMA)
    (tmp_path / "models" / "OpenPhenom").mkdir(parents=True)
    check_config(config, tmp_path, SCHEMA)


def test_scrna_obsm_example_config_is_valid_and_names_its_input(tmp_path):
    config = _validated(yaml.safe_load((REPO / "config" / "scrna_obsm.yaml").read_text()))
    assert config["datasets"]["atlas"]["scrna"]["embedding"] == "obsm:X_geneformer"
    with pytest.raises(ConfigError, match=r"datasets\.atlas\.scrna\.source"):
        check_config(config, tmp_path, SCHEMA)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "atlas.h5ad").write_bytes(b"\x89HDF\r\n")  # read by the embed job
    check_config(config, tmp_path, SCHEMA)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ({"channels": ["DNA"]}, "give load_data .* or files"),
        ({"channels": ["DNA"], "load_data": "a.csv", "files": "{x}.tif"}, "one of the two"),
        ({"channels": ["DNA"], "files": "{x}.tif"}, r"images\.metadata: files needs"),
        ({"channels": ["DNA"], "load_data": "a.csv"}, r"images\.load_data: 'a\.csv' does not"),
    ],
)
def test_an_image_layout_is_checked_before_any_job(demo_config, tmp_path, images, message):
    config = copy.deepcopy(demo_config)
    config["datasets"]["cellpainting"]["microscopy"]["images"] = images
    with pytest.raises(ConfigError, match=message):
        check_config(_validated(config), tmp_path, SCHEMA)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda m: m.update(layer_task="nope"), r"cellpainting\.microscopy\.layer_task"),
        (lambda m: m["heatmaps"].update(task="nope"), r"microscopy\.heatmaps\.task"),
        (lambda m: m["heatmaps"].update(variant="icfl_pca_k99_seed0"), r"heatmaps\.variant"),
    ],
)
def test_microscopy_keys_are_checked(demo_config, mutate, expected):
    config = _validated(demo_config)
    mutate(config["datasets"]["cellpainting"]["microscopy"])
    with pytest.raises(ConfigError, match=expected):
        check_config(config, REPO, SCHEMA)


def test_enrichment_settings_merge_and_defaults(demo_config):
    from cellconcepts.config import enrichment_settings

    config = _validated(demo_config)
    screen = enrichment_settings(config, "cellpainting")
    assert screen["min_term_size"] == 3 and screen["max_term_size"] == 500
    assert screen["screen"]["gene_column"] == "gene"
    pbmc = enrichment_settings(config, "pbmc")
    assert pbmc["min_term_size"] == 10 and pbmc["labels"] == [
        "CD19+ B",
        "CD14+ Monocyte",
        "CD56+ NK",
    ]
    assert pbmc["expression"]["de_method"] == "welch"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"label_task": "nope"}, r"datasets\.pbmc\.enrich\.label_task: 'nope' is not one of"),
        ({"min_term_size": 600}, r"datasets\.pbmc\.enrich: min_term_size 600 exceeds"),
        ({"variants": ["icfl_pca_k99_seed0"]}, r"enrich\.variants: \['icfl_pca_k99_seed0'\]"),
        ({"gene_sets": "missing.gmt"}, r"enrich\.gene_sets: 'missing\.gmt' is neither"),
        ({"screen": {"min_selectivity": None, "top_n": 0}}, r"enrich\.screen: .* lists no gene"),
        ({"expression": {"de_method": "deseq"}}, r"datasets\.pbmc\.enrich\.expression\.de_method"),
    ],
)
def test_bad_enrichment_settings_name_the_key(demo_config, override, message):
    config = _validated(demo_config)
    config["datasets"]["pbmc"]["enrich"] = deep_merge(
        config["datasets"]["pbmc"]["enrich"], override
    )
    with pytest.raises(ConfigError, match=message):
        check_config(config, REPO, SCHEMA)


def test_enrichment_gene_sets_may_be_a_gmt_file(demo_config, tmp_path):
    config = _validated(demo_config)
    (tmp_path / "mine.gmt").write_text("T\t\tA\tB\n")
    config["enrich"]["gene_sets"] = "mine.gmt"
    check_config(config, tmp_path, SCHEMA)


def test_user_images_without_the_gene_column_fail_at_config_time(demo_config, tmp_path):
    import numpy as np
    import pandas as pd

    config = _validated(demo_config)
    (tmp_path / "imgs").mkdir()
    np.save(tmp_path / "imgs" / "images.npy", np.zeros((2, 6, 64, 64), dtype=np.float32))
    pd.DataFrame({"image_id": ["a", "b"], "sirna": ["s1", "s2"]}).to_parquet(
        tmp_path / "imgs" / "obs.parquet"
    )
    config["datasets"]["cellpainting"]["microscopy"]["images"] = "imgs"
    with pytest.raises(ConfigError, match=r"enrich\.screen\.gene_column: 'gene' is not a column"):
        check_config(config, tmp_path, SCHEMA)
    config["datasets"]["cellpainting"]["enrich"]["enabled"] = False
    check_config(config, tmp_path, SCHEMA)


def test_a_checkpoint_must_say_how_its_images_are_normalised(tmp_path):
    """OpenPhenom-style weights given without input_norm would silently get the demo's
    standardisation: refused, naming the key. The example config says instance_norm."""
    from cellconcepts.microscopy.checkpoints import save_pretrained
    from cellconcepts.microscopy.vit import ViTConfig, ViTEncoder

    config = _validated(yaml.safe_load((REPO / "config" / "openphenom_rxrx3.yaml").read_text()))
    (tmp_path / "data" / "rxrx3_core").mkdir(parents=True)
    (tmp_path / "data" / "rxrx3_core" / "metadata_rxrx3_core.csv").write_text("well_id\n")
    (tmp_path / "models" / "OpenPhenom").mkdir(parents=True)
    check_config(config, tmp_path, SCHEMA)
    section = config["datasets"]["rxrx3"]["microscopy"]["model"]
    section["architecture"]["input_norm"] = None
    with pytest.raises(ConfigError, match=r"microscopy\.model\.architecture\.input_norm"):
        check_config(config, tmp_path, SCHEMA)
    # A directory this workflow saved carries its own normalisation.
    save_pretrained(
        ViTEncoder(ViTConfig(img_size=16, embed_dim=8, depth=1, num_heads=2)), tmp_path / "mine"
    )
    section["checkpoint"] = "mine"
    check_config(config, tmp_path, SCHEMA)


def test_sizes_are_checked_at_parse_time(demo_config):
    config = _validated(copy.deepcopy(demo_config))
    config["dictionary"]["sparsity"] = [600]  # synthetic: M = 512
    with pytest.raises(
        ConfigError,
        match=r"datasets\.synthetic: dictionary\.sparsity 600 is not below dictionary\.n_features",
    ):
        check_config(config, REPO, SCHEMA)
    config = _validated(copy.deepcopy(demo_config))
    config["datasets"]["pbmc"]["dictionary"]["sparsity"] = [128]  # as many as M = 128: dense
    with pytest.raises(ConfigError, match=r"datasets\.pbmc: dictionary\.sparsity 128 is not below"):
        check_config(config, REPO, SCHEMA)
    config = _validated(copy.deepcopy(demo_config))
    config["whitening"]["n_components"] = 100  # synthetic: 64 dimensions
    with pytest.raises(ConfigError, match=r"whitening\.n_components: 100 components"):
        check_config(config, REPO, SCHEMA)
    config = _validated(copy.deepcopy(demo_config))
    config["datasets"]["synthetic"]["synthetic"]["n_dims"] = 6  # sparsity 8 > 6 dimensions
    with pytest.raises(
        ConfigError,
        match=r"datasets\.synthetic: dictionary\.sparsity 8 exceeds the embedding dimension 6",
    ):
        check_config(config, REPO, SCHEMA)
    assert check_config(_validated(copy.deepcopy(demo_config)), REPO, SCHEMA) == []


def test_a_key_given_twice_in_a_config_file_is_refused_naming_it(tmp_path):
    from cellconcepts.config import check_unique_keys

    text = (
        "datasets:\n"
        "  mine:\n"
        "    kind: tokens\n"
        "    tasks: [{name: a, column: a}]\n"
        "  mine:\n"
        "    kind: tokens\n"
        "whitening: &w {methods: [none]}\n"
        "other: {<<: *w, methods: [pca]}\n"  # a merge key may be overridden
    )
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(
        ConfigError,
        match=r"c\.yaml, line 5: key 'mine' of datasets is given twice \(first on line 2\)",
    ):
        check_unique_keys(tmp_path / "c.yaml")
    (tmp_path / "t.yaml").write_text("a: 1\nb: [{x: 1, y: 2, x: 3}]\n")
    with pytest.raises(ConfigError, match=r"line 2: key 'x' of b\[0\] is given twice"):
        check_unique_keys(tmp_path / "t.yaml")
    (tmp_path / "c.json").write_text('{"results": "r", "results": "s"}')
    with pytest.raises(ConfigError, match=r"c\.json: key 'results' is given twice"):
        check_unique_keys(tmp_path / "c.json")
    check_unique_keys(REPO / "config" / "config.yaml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"datasets\.mine\.tokens\.path: 'emb\.npy' is empty \(0 bytes\)"),
        (b"garbage" * 10, r"datasets\.mine\.tokens\.path: cannot read 'emb\.npy' as an \.npy"),
    ],
    ids=["empty", "not-npy"],
)
def test_an_empty_or_unreadable_input_file_is_named_at_parse(tmp_path, content, message):
    (tmp_path / "emb.npy").write_bytes(content)
    (tmp_path / "obs.csv").write_text("cell_type\nT\n")
    dataset = _tiny_user_dataset("emb.npy")
    dataset["tokens"]["obs_path"] = "obs.csv"
    config = _validated({"datasets": {"mine": dataset}, "whitening": {"methods": ["none"]}})
    with pytest.raises(ConfigError, match=message):
        check_config(config, tmp_path, SCHEMA)


def test_a_screen_whose_channels_do_not_fit_the_model_is_refused_at_parse(demo_config, tmp_path):
    channels = ["DNA", "ER", "RNA", "AGP", "Mito"]
    columns = [f"{p}_{c}" for c in channels for p in ("FileName", "PathName")]
    (tmp_path / "load_data.csv").write_text(",".join(["Metadata_gene", *columns]) + "\n")
    config = copy.deepcopy(demo_config)
    microscopy = config["datasets"]["cellpainting"]["microscopy"]
    microscopy["images"] = {"load_data": "load_data.csv", "channels": channels}
    with pytest.raises(
        ConfigError,
        match=r"cellpainting\.microscopy\.images\.channels: 5 channels .* but the model takes 6 "
        r"\(datasets\.cellpainting\.microscopy\.model\.architecture: in_chans",
    ):
        check_config(_validated(config), tmp_path, SCHEMA)
    microscopy["images"]["channels"] = [*channels, "Brightfield"]
    with pytest.raises(
        ConfigError, match=r"load_data\.csv: no column FileName_Brightfield for channel"
    ):
        check_config(_validated(config), tmp_path, SCHEMA)


def test_browser_channels_must_exist(demo_config):
    config = _validated(demo_config)
    config["datasets"]["cellpainting"]["microscopy"]["browser_rgb"] = [0, 1, 7]
    with pytest.raises(
        ConfigError,
        match=r"cellpainting\.microscopy\.browser_rgb: \[0, 1, 7\] names channel 7, but the "
        r"images have 6 channels",
    ):
        check_config(config, REPO, SCHEMA)


def test_embedding_columns_missing_from_the_parquet_are_refused_at_parse(tmp_path, demo_config):
    import pandas as pd

    pd.DataFrame({"e0": [0.5], "e1": [1.5], "cell_type": ["T"]}).to_parquet(
        tmp_path / "emb.parquet"
    )
    config = _validated(demo_config)
    config["datasets"] = {"mine": _tiny_user_dataset("emb.parquet")}
    config["dictionary"]["sparsity"] = [2]
    for columns, said in (("x_", "no column"), (["e0", "e2"], "missing columns")):
        config["datasets"]["mine"]["tokens"]["embedding_columns"] = columns
        with pytest.raises(
            ConfigError,
            match=rf"mine\.tokens\.embedding_columns: .* match {said} of 'emb\.parquet'; "
            r"columns: \['e0', 'e1', 'cell_type'\]",
        ):
            check_config(_validated(config), tmp_path, SCHEMA)
