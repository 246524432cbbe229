"""Selectivity ceilings (oracle, out-of-fold probe), bootstrap intervals over units, and the
per-group detectability tables; expectations computed independently on small arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import balanced_accuracy_score, recall_score

from cellconcepts.evaluate.ceilings import (
    carriers,
    fraction_reached,
    mean_reached,
    oracle_selectivity,
    out_of_fold_scores,
    probe_selectivity,
    task_ceilings,
)
from cellconcepts.evaluate.detectability import comparisons, group_detectability
from cellconcepts.evaluate.probing import ProbeSettings, fit_probe, linear_probe
from cellconcepts.evaluate.selectivity import best_selectivity_per_label, selectivity
from cellconcepts.evaluate.uncertainty import (
    avg_selectivity,
    best_selectivity_samples,
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


def test_probe_ceiling_takes_the_top_scoring_tokens_of_each_label():
    labels = np.array(["a", "a", "b", "b", "b"])
    classes = np.array(["a", "b"])
    scores = np.array(
        [[0.9, 0.1], [0.2, 0.8], [0.8, 0.3], [0.1, 0.9], [0.0, 0.7]],
    )
    ceiling = probe_selectivity(labels, classes, scores)
    # a: top 2 by column a = tokens 0 and 2 -> P(a|a) 1/2, P(a|b) 1/3.
    # b: top 3 by column b = tokens 3, 1, 4 -> P(b|b) 2/3, P(b|a) 1/2.
    assert ceiling["a"] == pytest.approx(1 / 2 - 1 / 3)
    assert ceiling["b"] == pytest.approx(2 / 3 - 1 / 2)


def test_out_of_fold_scores_come_from_probes_that_never_saw_the_group():
    rng = np.random.default_rng(0)
    n = 120
    y = np.array(["a", "b", "c"] * (n // 3))
    x = rng.normal(size=(n, 4)) + 2.0 * (y[:, None] == np.array(["a", "b", "c", "a"]))
    groups = pd.Series(np.repeat(np.arange(4), n // 4).astype(str))
    probe = ProbeSettings(max_iter=200)
    rows, classes, scores = out_of_fold_scores(x, pd.Series(y), groups=groups, probe=probe, folds=4)
    assert rows.tolist() == list(range(n)) and classes.tolist() == ["a", "b", "c"]
    for g in range(4):
        held = (groups == str(g)).to_numpy()
        score, seen = fit_probe(x[~held], y[~held], max_iter=200, C=1.0, seed=0)
        np.testing.assert_allclose(scores[held], score(x[held]), rtol=1e-10)
        assert seen.tolist() == ["a", "b", "c"]


def test_task_ceilings_on_separable_and_on_random_labels():
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
    found = task_ceilings(separable, table, task, probe=probe, units=units, replicates=50)
    assert found["probe_recall"].tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(found["probe_ceiling"], 1.0)
    np.testing.assert_allclose(found["oracle_ceiling"], 0.5)  # every other token carries
    assert (found["ceiling_kind"] == "oracle").all()
    assert (found["probe_recall_low"] <= found["probe_recall"]).all()
    noise = task_ceilings(
        separable,
        table,
        {"name": "n", "column": "noise"},
        probe=probe,
        units=units,
        replicates=50,
    )
    assert (noise["ceiling_kind"] == "probe").all()
    assert noise["probe_ceiling"].abs().max() < 0.25
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


def test_intervals_are_those_of_the_feature_chosen_on_all_tokens():
    rng = np.random.default_rng(5)
    n = 300
    labels = np.array(["a", "b", "c"])[np.arange(n) % 3]
    codes = sp.csr_matrix((rng.random((n, 20)) < 0.2 + 0.1 * (labels == "a")[:, None]) * 1.0)
    samples = best_selectivity_samples({"m": codes}, labels, np.arange(n), replicates=200)
    best = best_selectivity_per_label(selectivity(codes, labels)).set_index("label")
    table = samples.table().set_index("label")
    np.testing.assert_allclose(
        table.loc[["a", "b", "c"], "best_avg"], best.loc[["a", "b", "c"], "best_avg"]
    )
    assert ((table.low <= table.best_avg) & (table.best_avg <= table.high)).all()


def test_paired_differences_and_verdicts():
    n = 200
    labels = np.array(["a", "b"] * (n // 2))
    perfect = sp.csr_matrix((labels == "a").astype(float)[:, None])
    noisy = sp.csr_matrix(((labels == "a") & (np.arange(n) % 4 < 2)).astype(float)[:, None])
    samples = best_selectivity_samples(
        {"good": perfect, "weak": noisy, "same": perfect.copy()},
        labels,
        np.arange(n),
        replicates=100,
    )
    table = samples.table().set_index(["model", "label"])
    assert table.loc[("good", "a"), "best_avg"] == 1.0
    assert table.loc[("weak", "a"), "best_avg"] == 0.5
    diff = samples.difference("good", "weak").set_index("label")
    assert diff.loc["a", "difference"] == 0.5 and diff.loc["a", "verdict"] == "good higher"
    tie = samples.difference("good", "same").set_index("label")
    assert (tie["low"] == 0).all() and (tie["verdict"] == "no difference").all()


def test_comparisons_pair_variants_of_equal_sparsity_and_seed():
    names = [
        "icfl_pca_k8_seed0",
        "topk_pca_k8_seed0",
        "icfl_none_k8_seed0",
        "topk_pca_k4_seed0",
        "icfl_pca_k8_seed1",
        "topk_pca_k8_seed1",
    ]
    assert comparisons(names) == [
        ("icfl_pca_k8_seed0", "topk_pca_k8_seed0"),
        ("icfl_pca_k8_seed1", "topk_pca_k8_seed1"),
        ("icfl_pca_k8_seed0", "icfl_none_k8_seed0"),
    ]


def test_group_detectability_tables():
    n = 240
    labels = pd.Series(np.array(["g1", "g2", "ctrl"])[np.arange(n) % 3])
    hit = (labels == "g1").to_numpy().astype(float)
    codes = {
        "icfl_pca_k8_seed0": sp.csr_matrix(hit[:, None]),
        "topk_pca_k8_seed0": sp.csr_matrix(np.zeros((n, 1))),
        "icfl_none_k8_seed0": sp.csr_matrix(hit[:, None]),
    }
    ceilings = pd.DataFrame(
        {
            "task": "t",
            "label": ["ctrl", "g1", "g2"],
            "n_tokens": 80,
            "chance": 1 / 3,
            "probe_recall": [0.3, 0.9, 0.34],
            "probe_recall_low": [0.2, 0.8, 0.30],
            "probe_recall_high": [0.4, 1.0, 0.40],
            "probe_ceiling": [0.0, 0.8, 0.0],
            "oracle_ceiling": [0.0, 1.0, 1.0],
        }
    )
    groups, intervals, differences = group_detectability(
        labels,
        codes,
        ceilings,
        np.arange(n),
        exclude=["ctrl"],
        bootstrap={"replicates": 50, "seed": 0, "level": 0.95},
    )
    assert groups["label"].tolist() == ["g1", "g2"]
    assert groups["encoder_sees"].tolist() == [True, False]
    assert groups["best_icfl_pca_k8_seed0"].tolist() == [1.0, -0.5]  # g2: 0 - (1 + 0) / 2
    assert set(intervals["label"]) == {"g1", "g2"}
    verdict = differences.set_index(["second", "label"])["verdict"]
    assert verdict[("topk_pca_k8_seed0", "g1")] == "icfl_pca_k8_seed0 higher"
    assert verdict[("icfl_none_k8_seed0", "g1")] == "no difference"


def test_fraction_reached_and_the_label_table():
    best = pd.DataFrame(
        {"task": "t", "label": ["a", "b", "ctrl"], "best_avg": [0.4, 0.3, 0.2], "variant": "m"}
    )
    ceilings = pd.DataFrame(
        {
            "task": "t",
            "label": ["a", "b", "ctrl"],
            "ceiling": [0.8, 0.6, 0.0],
            "ceiling_kind": "oracle",
            "oracle_ceiling": [0.8, 0.6, 0.0],
            "probe_ceiling": [0.5, 0.05, 0.1],
        }
    )
    merged = fraction_reached(best, ceilings, min_ceiling=0.1)
    assert merged["reached"].tolist()[:2] == [0.5, 0.5] and np.isnan(merged["reached"].iloc[2])
    assert mean_reached(merged, ["t"]) == {"sel_reached_t": 0.5}
    table, _ = label_selectivity({"m": best}, "t", ["ctrl"], ceilings=ceilings)
    rows = table.set_index("label")
    assert rows.loc["a", "oracle_ceiling"] == 0.8 and rows.loc["b", "probe_ceiling"] == 0.05
    assert rows.loc["fraction of ceiling", "m"] == pytest.approx(0.5)
    assert rows.loc["fraction of probe ceiling", "m"] == pytest.approx(0.8)  # b is below 0.1


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
