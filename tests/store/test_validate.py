"""validate_dataset: a token store checked against its tasks before anything is learned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellconcepts.store.tokens import TokenStore, write_token_store
from cellconcepts.store.validate import check_enrichment_labels, validate_dataset

TASKS = [
    {"name": "gene", "column": "gene", "group_by": "plate", "exclude": ["ctrl"]},
    {"name": "plate", "column": "plate"},
]


def _store(tmp_path, n: int = 120, dim: int = 4, **columns) -> TokenStore:
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {
            "token_id": [f"t{i}" for i in range(n)],
            "is_control": np.arange(n) % 4 == 0,
            "split": np.where(np.arange(n) % 5 == 0, "test", "train"),
            "gene": np.where(np.arange(n) % 4 == 0, "ctrl", np.where(np.arange(n) % 2, "g1", "g2")),
            "plate": np.where(np.arange(n) < n // 2, "p1", "p2"),
        }
    )
    for name, values in columns.items():
        obs[name] = values
    return write_token_store(tmp_path / "store", rng.normal(size=(n, dim)), obs)


def test_a_good_store_passes_with_a_report(tmp_path):
    report, warnings = validate_dataset(_store(tmp_path), TASKS, min_label_size=10)
    assert report["n_tokens"] == 120 and report["dim"] == 4 and report["n_controls"] == 30
    assert [t["labels"] for t in report["tasks"]] == [2, 2]
    assert warnings == []


def test_non_finite_tokens_name_the_row(tmp_path):
    store = _store(tmp_path)
    tokens = np.load(store.files.tokens, mmap_mode="r+")
    tokens[7, 2] = np.nan
    tokens.flush()
    with pytest.raises(
        ValueError,
        match=r"^emb\.parquet \(token store \S+tokens\.npy\): row 7 \(token_id 't7'\), "
        r"embedding dimension 2 holds NaN",
    ):
        validate_dataset(
            TokenStore.open(store.files), TASKS, min_label_size=10, source="emb.parquet"
        )


def test_a_rare_label_is_left_out_with_a_warning(tmp_path):
    gene = np.where(np.arange(120) % 4 == 0, "ctrl", np.where(np.arange(120) % 2, "g1", "g2"))
    gene = gene.astype(object)
    gene[1] = "lonely"
    report, warnings = validate_dataset(_store(tmp_path, gene=gene), TASKS, min_label_size=10)
    assert report["tasks"][0]["rare_labels"] == {"lonely": 1}
    assert any("task 'gene'" in w and "lonely" in w for w in warnings)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"gene": ["ctrl"] * 120}, r"task 'gene' \(column 'gene'\) has 0 label"),
        ({"gene": [None] * 120}, r"task 'gene' \(column 'gene'\) has 0 label"),
        ({"gene": ["g1"] * 120}, r"task 'gene' \(column 'gene'\) has 1 label"),
        ({"plate": ["p1"] * 120}, r"task 'gene' keeps groups of column 'plate' apart.*1 value"),
    ],
    ids=["all_excluded", "all_missing", "single_class", "single_group"],
)
def test_unusable_tasks_are_named(tmp_path, columns, message):
    with pytest.raises(ValueError, match=message):
        validate_dataset(_store(tmp_path, **columns), TASKS, min_label_size=10)


def test_missing_columns_are_named(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(ValueError, match=r"task 'x' reads column 'nope'"):
        validate_dataset(store, [{"name": "x", "column": "nope"}], min_label_size=10)
    grouped = [{"name": "gene", "column": "gene", "group_by": "well"}]
    with pytest.raises(ValueError, match=r"column 'well'.*not there"):
        validate_dataset(store, grouped, min_label_size=10)


def test_few_controls_are_refused_or_warned(tmp_path):
    one = np.zeros(120, dtype=bool)
    one[0] = True
    with pytest.raises(ValueError, match=r"1 control rows"):
        validate_dataset(_store(tmp_path, is_control=one), TASKS, min_label_size=10)


PCA = {"methods": ["pca", "none"], "n_components": None, "allow_dropped_dimensions": False}


def test_pca_whitening_on_fewer_controls_than_dimensions_is_refused_unless_accepted(tmp_path):
    three = np.zeros(120, dtype=bool)
    three[:3] = True
    store = _store(tmp_path, is_control=three)
    with pytest.raises(
        ValueError,
        match=r"3 control rows for 4-dimensional tokens: the PCA whitening fitted on them keeps "
        r"at most 2 of the 4 dimensions and drops the other 2 .*allow_dropped_dimensions: true",
    ):
        validate_dataset(store, TASKS, min_label_size=10, whitening=PCA)
    _, warnings = validate_dataset(
        store, TASKS, min_label_size=10, whitening={**PCA, "allow_dropped_dimensions": True}
    )
    (said,) = [w for w in warnings if "control rows" in w]
    assert "drops the other 2" in said and "unwhitened" not in said
    # fewer components than controls by choice, or no PCA: nothing to say
    for whitening in ({**PCA, "n_components": 2}, {**PCA, "methods": ["none"]}):
        _, warnings = validate_dataset(store, TASKS, min_label_size=10, whitening=whitening)
        assert not [w for w in warnings if "control rows" in w]
    # 5 controls span the 4 dimensions
    five = np.zeros(120, dtype=bool)
    five[:5] = True
    validate_dataset(_store(tmp_path, is_control=five), TASKS, min_label_size=10, whitening=PCA)


def test_an_exclude_value_that_is_not_a_label_is_refused_naming_the_nearest(tmp_path):
    store = _store(tmp_path)
    typo = [{**TASKS[0], "exclude": ["ctlr"]}]
    with pytest.raises(
        ValueError,
        match=r"task 'gene' excludes 'ctlr' \(tasks\[\]\.exclude\), which is not a label of "
        r"column 'gene'.*nearest label: 'ctrl'",
    ):
        validate_dataset(store, typo, min_label_size=10)
    with pytest.raises(ValueError, match=r"excludes 'zzz'.*labels: \['ctrl', 'g1', 'g2'\]"):
        validate_dataset(store, [{**TASKS[0], "exclude": ["zzz"]}], min_label_size=10)


def test_labels_differing_only_in_surrounding_whitespace_are_warned(tmp_path):
    gene = np.where(np.arange(120) % 4 == 0, "ctrl", np.where(np.arange(120) % 2, "g1", "g2"))
    gene = gene.astype(object)
    gene[1::8] = "g1 "
    _, warnings = validate_dataset(_store(tmp_path, gene=gene), TASKS, min_label_size=10)
    assert any(
        "task 'gene' (column 'gene'): 1 label(s) differ only in surrounding whitespace" in w
        and "'g1' and 'g1 '" in w
        for w in warnings
    ), warnings


def test_a_sparsity_above_the_dimension_is_refused(tmp_path):
    store = _store(tmp_path)
    validate_dataset(store, TASKS, min_label_size=10, sparsity=[4])
    with pytest.raises(ValueError, match=r"dictionary\.sparsity 6 exceeds the tokens' dimension 4"):
        validate_dataset(store, TASKS, min_label_size=10, sparsity=[2, 6])


def test_identical_tokens_are_refused_naming_the_file(tmp_path):
    store = _store(tmp_path)
    tokens = np.load(store.files.tokens, mmap_mode="r+")
    tokens[:] = 0.25
    tokens.flush()
    with pytest.raises(ValueError, match=r"tokens\.npy: all 120 tokens are identical"):
        validate_dataset(TokenStore.open(store.files), TASKS, min_label_size=10)


def test_one_varying_dimension_is_enough(tmp_path):
    store = _store(tmp_path)
    tokens = np.load(store.files.tokens, mmap_mode="r+")
    tokens[:, 1:] = 0.25
    tokens.flush()
    report, _ = validate_dataset(TokenStore.open(store.files), TASKS, min_label_size=10)
    assert report["n_tokens"] == 120


def test_labels_confounded_with_groups_are_refused(tmp_path):
    # Each gene on a plate of its own: a split that keeps plates apart tests no trained label.
    plate = np.where(np.arange(120) % 2, "p1", "p2")
    with pytest.raises(ValueError, match=r"task 'gene'.*confounded with 'plate'"):
        validate_dataset(_store(tmp_path, plate=plate), TASKS, min_label_size=10)


def test_enrichment_labels_must_be_labels_of_the_task(tmp_path):
    obs = _store(tmp_path).obs
    check_enrichment_labels(obs, TASKS[0], ["g1"], min_label_size=10)
    with pytest.raises(ValueError, match=r"enrich\.labels: \['ctrl', 'g3'\] are not labels"):
        check_enrichment_labels(obs, TASKS[0], ["g1", "g3", "ctrl"], min_label_size=10)
    with pytest.raises(ValueError, match=r"enrich\.labels: \['g2'\]"):
        check_enrichment_labels(obs, TASKS[0], ["g2"], min_label_size=1000)


def test_an_oracle_column_is_checked_before_anything_is_learned(tmp_path):
    hits = np.where(np.arange(120) % 3 == 0, "yes", "1")
    store = _store(tmp_path, n_hit=np.arange(120) % 2, word=hits)
    task = {"name": "gene", "column": "gene", "oracle": "n_hit"}
    validate_dataset(store, [task], min_label_size=10)
    with pytest.raises(ValueError, match=r"task 'gene' \(tasks\[\]\.oracle\).*'absent' is not"):
        validate_dataset(store, [{**task, "oracle": "absent"}], min_label_size=10)
    with pytest.raises(ValueError, match=r"oracle column 'word'.*'yes' in row 0"):
        validate_dataset(store, [{**task, "oracle": "word"}], min_label_size=10)
