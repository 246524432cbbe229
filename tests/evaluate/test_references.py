"""References for a label's best feature (oracle selectivity, the linear reference), bootstrap
intervals over units, the bounded summaries and the per-group detectability table;
expectations computed independently on small arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import balanced_accuracy_score, recall_score

from cellconcepts.evaluate.detectability import group_detectability
from cellconcepts.evaluate.probing import ProbeSettings, linear_probe
from cellconcepts.evaluate.references import (
    best_threshold,
    carriers,
    oracle_selectivity,
    out_of_fold,
    reference_summary,
    task_references,
)
from cellconcepts.evaluate.selectivity import selectivity
from cellconcepts.evaluate.uncertainty import (
    avg_selectivity,
    recall_intervals,
    unit_codes,
    unit_weights,
)
from cellconcepts.report.tables import label_selectivity


def test_oracle_is_the_carrier_fraction_of_each_label():
    labels = pd.Series(["a", "a", "a", "a", "b", "b", "c", "c", None])
    carries = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    oracle = oracle_selectivity(labels, carries)
    # P(active | own) - mean over others of 0: a 3/4, b 1/2, c 0 (no carrier).
    assert oracle.to_dict() == {"a": 0.75, "b": 0.5, "c": 0.0}


def test_carriers_reads_counts_and_booleans_and_names_a_bad_row():
    table = pd.DataFrame({"n": [0, 2, 1], "flag": [True, False, True], "bad": ["1", "x", "0"]})
    assert carriers(table, "n").tolist() == [False, True, True]
    assert carriers(table, "flag").tolist() == [True, False, True]
    with pytest.raises(ValueError, match=r"'bad'.*'x' in row 1"):
        carriers(table, "bad")
    with pytest.raises(ValueError, match="'missing' is not in obs"):
        carriers(table, "missing")


def test_best_threshold_maximises_the_training_selectivity():
    # label 0 of labels 0/1/2 (two tokens each). Cutting after the top 1, 2, 3, 4 scores:
    # top 1 {a}: 1/2 - 0; top 2 {a, a}: 1 - 0; top 3 {a, a, b}: 1 - (1/2 + 0)/2; ...
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.0])
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert best_threshold(scores, labels, 0) == pytest.approx((0.8 + 0.7) / 2)
    # label 1 (tokens 2 and 3, ranked 3rd and 5th): top 3 {a, a, b} gives 1/2 - (1 + 0)/2 = 0,
    # top 4 {a, a, b, c} gives 1/2 - (1 + 1/2)/2 < 0, top 5
    # gives 1 - (1 + 1/2)/2 = 1/4 > 0, top 6 gives 0: the cut is after the 5th score (0.1),
    # halfway to the 6th (0.0)
    assert best_threshold(scores, labels, 1) == pytest.approx(0.05)
    # a label whose tokens rank last: no cut beats staying inactive, the threshold is +inf
    assert best_threshold(scores, np.array([1, 1, 1, 2, 0, 0]), 0) == np.inf
    # ties: a cut never splits equal scores
    tied = np.array([0.5, 0.5, 0.5, 0.1])
    assert best_threshold(tied, np.array([0, 1, 0, 1]), 0) == pytest.approx(0.3)
    assert best_threshold(scores, np.zeros(6, dtype=np.int64), 0) == np.inf  # one label only


def test_out_of_fold_scores_ignore_the_labels_of_their_own_fold():
    # A probe that never saw a group gives that group the same scores whatever its labels;
    # the other groups' scores change when the group's labels (part of their training) do.
    rng = np.random.default_rng(0)
    n = 120
    y = np.array(["a", "b", "c"] * (n // 3))
    x = rng.normal(size=(n, 4)) + 2.0 * (y[:, None] == np.array(["a", "b", "c", "a"]))
    groups = pd.Series(np.repeat(np.arange(4), n // 4).astype(str))
    probe = ProbeSettings(max_iter=200)
    found = out_of_fold(x, pd.Series(y), groups=groups, probe=probe, folds=4)
    assert found.rows.tolist() == list(range(n)) and found.classes.tolist() == ["a", "b", "c"]
    relabelled = y.copy()
    held = (groups == "2").to_numpy()
    relabelled[held] = rng.permutation(relabelled[held])
    again = out_of_fold(x, pd.Series(relabelled), groups=groups, probe=probe, folds=4)
    np.testing.assert_array_equal(again.scores[held], found.scores[held])
    # and so are its activations: thresholds come from the training folds only
    np.testing.assert_array_equal(again.active[held], found.active[held])
    assert not np.allclose(again.scores[~held], found.scores[~held])
    assert found.active.dtype == bool and found.active.shape == (n, 3)


def test_linear_reference_on_separable_and_on_random_labels():
    rng = np.random.default_rng(1)
    n = 300
    y = np.array(["x", "y", "z"])[np.arange(n) % 3]
    separable = rng.normal(size=(n, 5)) * 0.1 + 3.0 * (
        y[:, None] == np.array(["x", "y", "z", "x", "y"])
    )
    table = pd.DataFrame({"label": y, "noise": rng.permutation(y), "n_hit": np.arange(n) % 2})
    probe = ProbeSettings(max_iter=300)
    units = np.arange(n)
    task = {"name": "t", "column": "label", "oracle": "n_hit"}
    found = task_references(separable, table, task, probe=probe, units=units, replicates=50)
    assert found["probe_recall"].tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(found["linear_reference"], 1.0)
    np.testing.assert_allclose(found["linear_reference_frequency"], 1 / 3)
    np.testing.assert_allclose(found["oracle_selectivity"], 0.5)  # every other token carries
    assert (found["probe_recall_low"] <= found["probe_recall"]).all()
    noise = task_references(
        separable,
        table,
        {"name": "n", "column": "noise"},
        probe=probe,
        units=units,
        replicates=200,
    )
    assert noise["oracle_selectivity"].isna().all()
    assert noise["linear_reference"].abs().max() < 0.25
    assert (noise["linear_reference_low"] <= 0).all() and (
        noise["linear_reference_high"] >= 0
    ).all()
    assert (noise["probe_recall_low"] < noise["chance"]).any()


def test_unit_weights_draw_whole_units():
    units = unit_codes(
        pd.DataFrame({"plate": ["p", "p", "q", "q"], "well": [1, 1, 1, 2]}), ["plate", "well"]
    )
    assert units[0] == units[1] and len(set(units)) == 3
    assert unit_codes(pd.DataFrame(index=range(3)), []).tolist() == [0, 1, 2]
    for w in unit_weights(units, 20, seed=0):
        assert w[0] == w[1]  # one unit, one weight
        assert w.sum() == 3 + w[0]  # three draws; the two-token unit counts twice
    with pytest.raises(ValueError, match="no column 'site'"):
        unit_codes(pd.DataFrame({"plate": ["p"]}), ["site"])


def test_recall_intervals_match_sklearn_and_collapse_with_one_unit():
    y = np.array(list("aaabbbbcc"))
    pred = np.array(list("aabbbbacc"))
    table = recall_intervals(y, pred, np.zeros(len(y)), replicates=30).set_index("label")
    expected = recall_score(y, pred, average=None, labels=["a", "b", "c"])
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "recall"], expected)
    assert table.loc["BTA", "recall"] == pytest.approx(balanced_accuracy_score(y, pred))
    # a single unit: every resample is the data itself
    np.testing.assert_allclose(table["low"], table["recall"])
    np.testing.assert_allclose(table["high"], table["recall"])
    spread = recall_intervals(y, pred, np.arange(len(y)), replicates=200).set_index("label")
    assert spread.loc["BTA", "low"] < spread.loc["BTA", "recall"] < spread.loc["BTA", "high"]


def test_weighted_selectivity_is_selectivity_on_repeated_tokens():
    rng = np.random.default_rng(2)
    codes = sp.random(40, 6, density=0.3, random_state=3, format="csr")
    labels = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 40)]
    weights = rng.integers(0, 3, 40).astype(float)
    weights[:4] = 1.0
    classes, index = np.unique(labels, return_inverse=True)
    active = (codes != 0).astype(float).tocsr()
    got = avg_selectivity(active, index, len(classes), weights)
    repeat = np.repeat(np.arange(40), weights.astype(int))
    expected = selectivity(codes[repeat], labels[repeat])
    assert expected.labels.tolist() == classes.tolist()
    np.testing.assert_allclose(got, expected.avg)


def test_group_detectability_table():
    limits = pd.DataFrame(
        {
            "task": "t",
            "label": ["ctrl", "g1", "g2"],
            "n_tokens": 80,
            "chance": 1 / 3,
            "probe_recall": [0.3, 0.9, 0.34],
            "probe_recall_low": [0.2, 0.8, 0.30],
            "probe_recall_high": [0.4, 1.0, 0.40],
            "linear_reference": [0.0, 0.8, 0.1],
            "linear_reference_low": [-0.1, 0.7, 0.0],
            "oracle_selectivity": [0.0, 1.0, 1.0],
        }
    )

    def scores(g1: float, g2: float, above: tuple[bool, bool]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "task": "t",
                "label": ["g1", "g2", "g1", "g2"],
                "score": ["heldout_avg"] * 2 + ["insample_avg"] * 2,
                "value": [g1, g2, 0.9, 0.9],
                "above_null": [*above, True, True],
            }
        )

    groups = group_detectability(
        ["g1", "g2"],
        {
            "icfl_pca_k8_seed0": scores(0.6, 0.1, (True, False)),
            "icfl_pca_k8_seed1": scores(0.4, 0.0, (True, True)),
            "topk_pca_k8_seed0": scores(0.2, 0.0, (False, False)),
        },
        limits,
        "t",
    )
    assert groups["label"].tolist() == ["g1", "g2"]
    assert groups["encoder_sees"].tolist() == [True, False]
    np.testing.assert_allclose(groups["heldout_icfl_pca_k8"], [0.5, 0.05])  # mean of 2 seeds
    np.testing.assert_allclose(groups["above_null_icfl_pca_k8"], [1.0, 0.5])
    np.testing.assert_allclose(groups["above_null_topk_pca_k8"], [0.0, 0.0])
    assert groups["linear_reference"].tolist() == [0.8, 0.1]


def test_summaries_are_fractions_of_labels_even_where_a_feature_beats_every_reference():
    # Every label above null has a held-out best at or above its oracle selectivity: the
    # ratio the headline used to report (best / oracle) would be up to 2; the summaries stay
    # fractions of labels.
    scores = pd.DataFrame(
        {
            "task": "t",
            "label": ["a", "b", "c", "d", "e"],
            "score": "heldout_avg",
            "value": [1.0, 1.0, 0.3, 0.05, np.nan],  # e: no test token, could not be scored
            "p_value": [0.001, 0.001, 0.01, 0.4, np.nan],
            "above_null": [True, True, True, False, False],
        }
    )
    references = pd.DataFrame(
        {
            "task": "t",
            "label": ["a", "b", "c", "d"],
            "linear_reference_low": [0.4, 1.0, 0.5, 0.0],
            "oracle_selectivity": [0.5, 0.5, 0.3, 0.5],
        }
    )
    found = reference_summary(scores, references, ["t"])
    # above null: a, b, c of 4; reaching the reference's low end: a (1 >= 0.4), b (1 >= 1)
    assert found == {
        "heldout_avg_t": pytest.approx((1.0 + 1.0 + 0.3 + 0.05) / 4),
        "labels_above_null_t": 0.75,
        "labels_reaching_reference_t": 2 / 3,
    }
    nothing = reference_summary(scores.assign(above_null=False), references, ["t"])
    assert nothing["labels_above_null_t"] == 0.0
    assert np.isnan(nothing["labels_reaching_reference_t"])


def test_label_table_with_references_and_the_held_out_null():
    best = pd.DataFrame(
        {"task": "t", "label": ["a", "b", "c", "ctrl"], "best_avg": [0.6, 0.3, 0.1, 0.2]}
    )
    references = pd.DataFrame(
        {
            "task": "t",
            "label": ["a", "b", "c", "ctrl"],
            "oracle_selectivity": [0.8, 0.6, 0.5, 0.0],
            "linear_reference": [0.5, 0.05, 0.2, 0.1],
        }
    )
    scores = pd.DataFrame(
        {
            "task": "t",
            "label": ["a", "b", "c", "ctrl"],
            "score": "heldout_avg",
            "p_value": [0.001, 0.3, np.nan, 0.001],  # c: no test token, not counted
            "above_null": [True, False, False, True],
        }
    )
    table, fraction = label_selectivity(
        {"m": best}, "t", ["ctrl"], references=references, scores={"m": scores}
    )
    rows = table.set_index("label")
    assert rows.loc["a", "oracle_selectivity"] == 0.8 and rows.loc["b", "linear_reference"] == 0.05
    assert rows.loc["fraction >= 0.5", "m"] == pytest.approx(1 / 3) and fraction["m"] == 1 / 3
    # of a and b (c could not be scored, ctrl is excluded), a is above null
    assert rows.loc["fraction above null (held out)", "m"] == 0.5
    assert "ctrl" not in rows.index


def test_linear_probe_interval_brackets_the_bta():
    rng = np.random.default_rng(4)
    y = np.array(["a", "b"] * 60)
    x = rng.normal(size=(120, 3)) + (y == "a")[:, None]
    boot = {"replicates": 100, "seed": 0, "level": 0.9}
    result = linear_probe(x[:80], y[:80], x[80:], y[80:], bootstrap=boot)
    assert result["bta_low"] <= result["bta"] <= result["bta_high"]
    one = linear_probe(x[:80], y[:80], x[80:], y[80:], bootstrap=boot, test_units=np.zeros(40))
    assert one["bta_low"] == one["bta_high"] == pytest.approx(one["bta"])


def test_seed_summary_gives_mean_and_sd_over_seeds():
    from cellconcepts.report.tables import seed_summary

    headline = pd.DataFrame(
        {
            "method": ["icfl", "icfl", "icfl", "topk", "raw"],
            "whitening": ["pca", "pca", "pca", "pca", "none"],
            "sparsity": [8, 8, 8, 8, None],
            "seed": [0, 1, 2, 0, None],
            "atom_recovery_model": [0.9, 0.8, 1.0, 0.5, None],
            "bta_x": [0.5, 0.7, 0.6, 0.4, 0.9],
        }
    )
    table = seed_summary(headline).set_index("method")
    assert table.loc["icfl", "n_seeds"] == 3 and table.loc["topk", "n_seeds"] == 1
    assert table.loc["icfl", "atom_recovery_model"] == pytest.approx(0.9)
    assert table.loc["icfl", "atom_recovery_model_sd"] == pytest.approx(0.1)
    assert table.loc["icfl", "bta_x_sd"] == pytest.approx(0.1)
    assert np.isnan(table.loc["topk", "bta_x_sd"])
    assert "raw" not in table.index


def test_references_table_stacks_every_tasks_references():
    from cellconcepts.evaluate.references import references_table

    rng = np.random.default_rng(5)
    n = 120
    y = np.array(["x", "y", "z"])[np.arange(n) % 3]
    features = rng.normal(size=(n, 4)) + 2.0 * (y[:, None] == np.array(["x", "y", "z", "x"]))
    table = pd.DataFrame({"label": y, "other": np.where(np.arange(n) % 4 < 2, "p", "q")})
    tasks = [{"name": "t", "column": "label"}, {"name": "u", "column": "other"}]
    probe = ProbeSettings(max_iter=200)
    units = np.arange(n) // 2
    bootstrap = {"replicates": 30, "seed": 3, "level": 0.9}
    found = references_table(
        features, table, tasks, probe=probe, units=units, folds=3, bootstrap=bootstrap
    )
    expected = [
        task_references(features, table, task, probe=probe, units=units, folds=3, **bootstrap)
        for task in tasks
    ]
    assert found["task"].tolist() == ["t"] * 3 + ["u"] * 2
    assert found.index.tolist() == list(range(5))
    pd.testing.assert_frame_equal(found, pd.concat(expected, ignore_index=True))


def test_shown_labels_are_the_sorted_text_labels_less_the_excluded():
    from cellconcepts.evaluate.detectability import shown_labels

    labels = pd.Series(["g2", "ctrl", np.nan, "g1", "g2", 3], dtype=object)
    assert shown_labels(labels, ["ctrl"]) == ["3", "g1", "g2"]
    assert shown_labels(labels, [3, "g2"]) == ["ctrl", "g1"]


def test_task_detectability_reads_its_tasks_references_only():
    from cellconcepts.evaluate.detectability import task_detectability

    def limits(task: str, recall: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "task": task,
                "label": ["ctrl", "g1"],
                "n_tokens": 10,
                "chance": 0.5,
                "probe_recall": recall,
                "probe_recall_low": recall - 0.1,
                "probe_recall_high": recall + 0.1,
                "linear_reference": 0.3,
                "linear_reference_low": 0.2,
                "oracle_selectivity": 1.0,
            }
        )

    references = pd.concat([limits("other", 0.1), limits("t", 0.9)], ignore_index=True)
    scores = pd.DataFrame(
        {
            "task": ["t", "other"],
            "label": ["g1", "g1"],
            "score": "heldout_avg",
            "value": [0.4, 0.0],
            "above_null": [True, False],
        }
    )
    labels = pd.Series(["ctrl", "g1", "g1", None], dtype=object)
    groups = task_detectability(labels, ["ctrl"], {"icfl_pca_k8_seed0": scores}, references, "t")
    assert groups["label"].tolist() == ["g1"]
    assert groups["raw_probe_recall"].tolist() == [0.9]
    assert groups["encoder_sees"].tolist() == [True]
    assert groups["heldout_icfl_pca_k8"].tolist() == [0.4]
    assert groups["above_null_icfl_pca_k8"].tolist() == [1.0]


def test_profile_recalls_probe_the_profiles_in_token_order():
    from cellconcepts.cellprofiler.profiles import aligned_profiles
    from cellconcepts.evaluate.detectability import probe_recalls, profile_recalls
    from cellconcepts.evaluate.references import fold_groups
    from cellconcepts.evaluate.uncertainty import split_units

    rng = np.random.default_rng(6)
    n = 90
    y = np.array(["a", "b", "c"])[np.arange(n) % 3]
    matrix = rng.normal(size=(n, 3)) + 2.0 * (y[:, None] == np.array(["a", "b", "c"]))
    obs = pd.DataFrame(
        {"token_id": [f"i{k}" for k in range(n)], "label": y, "plate": np.arange(n) // 9}
    )
    order = rng.permutation(n)  # profiles in another order than the tokens
    profiles = pd.DataFrame(matrix[order], columns=["f1", "f2", "f3"])
    profiles.insert(0, "image_id", obs["token_id"].to_numpy()[order])
    labels = pd.Series(y)
    task = {"name": "t", "column": "label"}
    probe = ProbeSettings(max_iter=200)
    bootstrap = {"replicates": 40, "seed": 1, "level": 0.9}
    aligned, _ = aligned_profiles(profiles, obs, "profiles.parquet")
    found = profile_recalls(
        aligned,
        obs,
        task,
        labels,
        resample_unit=["plate"],
        probe=probe,
        folds=3,
        bootstrap=bootstrap,
    )
    plates = obs["plate"].astype(str).factorize()[0]
    expected = probe_recalls(
        matrix,
        labels,
        fold_groups(obs, task, split_units(obs, ["plate"])),
        plates,
        probe=probe,
        folds=3,
        bootstrap=bootstrap,
    )
    pd.testing.assert_frame_equal(found, expected)
    assert set(found["label"]) == {"a", "b", "c", "BTA"}
    with pytest.raises(ValueError, match="profiles.parquet: no profile for tokens"):
        aligned_profiles(profiles.iloc[1:], obs, "profiles.parquet")
