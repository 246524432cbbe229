"""Control masks and train/test splits for inputs that lack them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellconcepts.store.obs import annotate_obs, assign_split, control_mask, parse_flags


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "guide": ["NT", "A", "NT", "B", "A", "NT"],
            "plate": ["p1", "p1", "p2", "p2", "p3", "p3"],
            "cell_type": ["x", "y", "x", "y", "x", "y"],
        }
    )


def test_control_mask_by_values_and_all():
    table = _table()
    assert control_mask(table, {"column": "guide", "values": ["NT"]}).tolist() == [
        True,
        False,
        True,
        False,
        False,
        True,
    ]
    assert control_mask(table, "all").all()


def test_control_mask_errors_name_the_column():
    with pytest.raises(ValueError, match="control.column 'guid' is not an obs column"):
        control_mask(_table(), {"column": "guid", "values": ["NT"]})
    with pytest.raises(ValueError, match="only 0 rows have guide in"):
        control_mask(_table(), {"column": "guide", "values": ["none"]})


def test_random_split_fraction_and_determinism():
    table = pd.DataFrame({"x": range(100)})
    first = assign_split(table, test_fraction=0.2, seed=3)
    assert (first == "test").sum() == 20
    assert (assign_split(table, test_fraction=0.2, seed=3) == first).all()
    assert not (assign_split(table, test_fraction=0.2, seed=4) == first).all()


def test_grouped_split_keeps_groups_apart():
    table = _table()
    split = assign_split(table, test_fraction=0.3, group_column="plate", seed=0)
    for _, rows in pd.DataFrame({"plate": table.plate, "split": split}).groupby("plate"):
        assert rows.split.nunique() == 1
    assert set(split) == {"train", "test"}


def test_annotate_obs_adds_required_columns_and_keeps_existing_split():
    table = _table()
    annotated = annotate_obs(
        table,
        control={"column": "guide", "values": ["NT"]},
        split={"test_fraction": 0.5, "seed": 0},
        label_columns=["cell_type"],
    )
    assert {"token_id", "is_control", "split"} <= set(annotated.columns)
    assert annotated.token_id.is_unique
    table["split"] = ["train"] * 5 + ["test"]
    kept = annotate_obs(
        table, control="all", split={"test_fraction": 0.5}, label_columns=["cell_type"]
    )
    assert kept.split.tolist() == table.split.tolist()
    with pytest.raises(ValueError, match=r"task label columns \['celltype'\]"):
        annotate_obs(table, control="all", split={"test_fraction": 0.5}, label_columns=["celltype"])
    assert np.array_equal(kept.is_control, np.ones(6, dtype=bool))


def test_annotate_obs_keeps_the_inputs_is_control_when_control_is_null():
    table = _table()
    table["is_control"] = table.guide == "NT"
    kept = annotate_obs(table, control=None, split={"test_fraction": 0.5}, label_columns=[])
    assert kept.is_control.tolist() == (table.guide == "NT").tolist()
    with pytest.raises(ValueError, match="no is_control column"):
        annotate_obs(_table(), control=None, split={"test_fraction": 0.5}, label_columns=[])


def test_annotate_obs_needs_train_and_test_rows():
    table = _table()
    table["split"] = "train"
    with pytest.raises(ValueError, match="0 of 6 rows are 'test'"):
        annotate_obs(table, control="all", split={"test_fraction": 0.5}, label_columns=[])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([True, False, True], [True, False, True]),
        ([1, 0, 0], [True, False, False]),
        (["yes", "No", "YES"], [True, False, True]),
        (["True", "false", " TRUE "], [True, False, True]),
        (["1", "0", "1"], [True, False, True]),
    ],
)
def test_control_flags_parse_the_usual_spellings(values, expected):
    assert parse_flags(pd.Series(values), "is_control").tolist() == expected


@pytest.mark.parametrize(
    "values", [["yes", "maybe"], ["True", None], [2, 0], [0.5, 1.0], ["ctrl", "ko"]]
)
def test_control_flags_refuse_anything_else_naming_the_values(values):
    with pytest.raises(ValueError, match=r"column 'is_control'.*found"):
        parse_flags(pd.Series(values), "column 'is_control'")


def test_string_controls_are_not_all_true():
    """'no' used to become True through astype(bool): whitening on every row."""
    obs = pd.DataFrame({"is_control": ["yes", "no", "no", "yes"], "label": list("abab")})
    annotated = annotate_obs(
        obs, control=None, split={"test_fraction": 0.5, "seed": 0}, label_columns=["label"]
    )
    assert annotated["is_control"].tolist() == [True, False, False, True]


def test_split_values_are_named_with_a_hint():
    obs = pd.DataFrame({"split": ["Train", "test", "Test"], "label": list("abc")})
    with pytest.raises(ValueError, match=r"row 0 has 'Train'.*lower-case them"):
        annotate_obs(obs, control="all", split={"test_fraction": 0.5}, label_columns=["label"])
    with pytest.raises(ValueError, match="no rows"):
        annotate_obs(obs.iloc[:0], control="all", split={"test_fraction": 0.5}, label_columns=[])


def test_an_obs_csv_is_read_as_written(tmp_path):
    """ids with leading zeros and labels such as "None" or "NA" stay the strings they are;
    only an empty cell is missing (pandas' defaults made 0..299 of "00000".."00299" and
    missing values of "None")."""
    from cellconcepts.store.readers import read_embeddings

    np.save(tmp_path / "emb.npy", np.arange(12, dtype=np.float32).reshape(6, 2))
    (tmp_path / "obs.csv").write_text(
        "token_id,label,is_control,score\n"
        "00000,None,1.0,0.5\n00001,NA,0.0,1\n00002,null,0.0,\n"
        "00003,A,1.0,2\n00004,,0.0,3\n00005,007,0.0,4\n"
    )
    _, obs = read_embeddings(tmp_path / "emb.npy", obs_path=tmp_path / "obs.csv")
    assert obs["token_id"].tolist() == [f"{i:05d}" for i in range(6)]
    assert obs["label"].tolist()[:4] == ["None", "NA", "null", "A"]
    assert pd.isna(obs["label"][4]) and obs["label"][5] == "007"
    annotated = annotate_obs(
        obs, control=None, split={"test_fraction": 0.5, "seed": 0}, label_columns=["label"]
    )
    assert annotated["is_control"].tolist() == [True, False, False, True, False, False]
    assert annotated["token_id"].tolist() == obs["token_id"].tolist()


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"token_id": ["a", "b", "a", "c", "d", "e"]}, r"column 'token_id' must be unique.*'a'"),
        ({"token_id": ["a", None, "b", "c", "d", "e"]}, r"column 'token_id' has a missing .*row 1"),
        (
            {"obs_name": ["c0", "c1", "c2", "c2", "c4", "c5"]},
            r"the row names \(obs index, read as token_id\) must be unique.*'c2' is on rows "
            r"\[2, 3\]",
        ),
    ],
    ids=["repeated", "missing", "repeated-names"],
)
def test_token_ids_are_checked_where_they_come_from(columns, message):
    table = _table().assign(**columns)
    with pytest.raises(ValueError, match=message):
        annotate_obs(
            table,
            control={"column": "guide", "values": ["NT"]},
            split={"test_fraction": 0.5, "seed": 0},
            label_columns=["guide"],
        )


def test_embeddings_that_are_not_finite_are_named_by_file_row_and_column(tmp_path):
    from cellconcepts.store.readers import read_embeddings

    table = pd.DataFrame({"e0": [0.0, 1.0, 2.0], "e1": [0.0, 1e300, 2.0], "g": ["a", "b", "c"]})
    table.to_parquet(tmp_path / "emb.parquet")
    with pytest.raises(
        ValueError, match=r"emb\.parquet: row 1, column 'e1': inf as float32 \(beyond its range"
    ):
        read_embeddings(tmp_path / "emb.parquet", embedding_columns="e")
    table.loc[2, "e0"] = np.nan
    table.assign(token_id=["x", "y", "z"]).to_parquet(tmp_path / "emb.parquet")
    with pytest.raises(ValueError, match=r"emb\.parquet: row 1 \(token_id 'y'\), column 'e1'"):
        read_embeddings(tmp_path / "emb.parquet", embedding_columns="e")
