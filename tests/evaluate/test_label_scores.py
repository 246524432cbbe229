"""Held-out best features, their permutation nulls, average precision, and the comparisons
between variants over units and seeds; expectations computed by hand or by scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import average_precision_score

from cellconcepts.evaluate.label_scores import (
    OTHER,
    TEST,
    TRAIN,
    SignificanceSettings,
    TaskDesign,
    benjamini_hochberg,
    features_above_null,
    label_score_tables,
    task_design,
    task_scores,
)
from cellconcepts.evaluate.permutation import permutation_design, permuted_labels
from cellconcepts.evaluate.precision import average_precision, weighted_average_precision
from cellconcepts.evaluate.probing import ProbeSettings
from cellconcepts.evaluate.selectivity import selectivity

SETTINGS = SignificanceSettings(permutations=199, seed=0, fdr=0.05, matched_frequency=2.0)


def design(labels, side, blocks=None, units=None, name="t") -> TaskDesign:
    """A TaskDesign from per-token label strings (None = unlabelled) and sides."""
    values = pd.Series(labels, dtype=object)
    classes = np.array(sorted(values.dropna().unique()))
    index = np.array([-1 if v is None else int(np.searchsorted(classes, v)) for v in values])
    n = len(values)
    return TaskDesign(
        name,
        classes,
        index,
        np.asarray(side),
        np.zeros(n, np.int64) if blocks is None else np.asarray(blocks),
        units,
    )


# ----------------------------------------------------------------------------- permutations


def test_permutations_exchange_labels_only_within_blocks():
    labels = np.array([0, 0, 1, 1, 2, -1, 2, 0, 1, 2])
    blocks = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    found = permutation_design(labels, blocks)
    chunks = list(permuted_labels(found, 50, seed=3, chunk=16))
    assert [c.shape for c in chunks] == [(16, 10), (16, 10), (16, 10), (2, 10)]
    perms = np.concatenate(chunks)
    for block in (0, 1):
        members = (blocks == block) & (labels >= 0)
        expected = np.sort(labels[members])
        assert all((np.sort(p[members]) == expected).all() for p in perms)
    assert (perms[:, 5] == -1).all()  # unlabelled stays unlabelled
    assert len({p.tobytes() for p in perms}) > 10  # they do move
    again = np.concatenate(list(permuted_labels(found, 50, seed=3, chunk=7)))
    np.testing.assert_array_equal(perms, again)  # same seed, same nulls, whatever the chunks


def test_units_move_whole_and_mixed_units_fall_back_to_tokens():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    units = np.array([5, 5, 5, 7, 7, 7, 9, 9, 9])
    found = permutation_design(labels, None, units)
    assert found.by_unit
    for p in np.concatenate(list(permuted_labels(found, 30, seed=0))):
        assert len(set(p[:3])) == len(set(p[3:6])) == len(set(p[6:])) == 1
    mixed = permutation_design(np.array([0, 1, 0, 1]), None, np.array([1, 1, 2, 2]))
    assert not mixed.by_unit


# ----------------------------------------------------------------------------- average precision


def test_average_precision_equals_scikit_learn_with_ties_and_empty_features():
    rng = np.random.default_rng(0)
    n, m = 150, 12
    dense = np.where(rng.random((n, m)) < 0.3, np.round(rng.normal(size=(n, m)), 1), 0.0)
    dense[:, 0] = 0.0  # never active: one step, precision = the label's share
    dense[:, 1] = -2.0  # active everywhere, all tied (|code| is ranked)
    labels = rng.integers(-1, 3, n)
    found = average_precision(sp.csr_matrix(dense), labels, 3, max_entries=40)
    keep = labels >= 0
    for label in range(3):
        for feature in range(m):
            expected = average_precision_score(labels[keep] == label, abs(dense[keep, feature]))
            assert found[label, feature] == pytest.approx(expected, abs=1e-12)
    weights = rng.integers(0, 3, (4, n)).astype(float)
    feature, label = 3, 1
    magnitude = abs(dense[keep, feature])
    own = labels[keep] == label
    w = weights[:, keep]
    active = magnitude > 0
    got = weighted_average_precision(
        magnitude[active], (w * own)[:, active], w[:, active], (w * own).sum(1), w.sum(1)
    )
    expected = [average_precision_score(own, magnitude, sample_weight=w[r]) for r in range(4)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


# ----------------------------------------------------------------------------- label scores


def test_scores_of_a_hand_built_case():
    # 12 tokens, labels a/b/c, train = tokens 0-8, test = 9-11 (one of each label).
    labels = ["a", "b", "c"] * 4
    side = [TRAIN] * 9 + [TEST] * 3
    codes = np.zeros((12, 3))
    codes[[0, 3, 6, 9], 0] = 1.0  # feature 0: exactly the a tokens
    codes[[0, 1, 3, 4, 6, 7, 10], 1] = 1.0  # feature 1: every a and b of train, the test b
    codes[[2, 5], 2] = [0.2, 0.9]  # feature 2: two c tokens, stronger on token 5
    found = task_scores(sp.csr_matrix(codes), design(labels, side), SETTINGS).table
    value = found.set_index(["score", "label"])["value"]
    feature = found.set_index(["score", "label"])["feature"]
    # a: feature 0 is active on every a and nothing else, everywhere: 1 - 0
    assert value[("insample_avg", "a")] == 1.0 and feature[("insample_avg", "a")] == 0
    assert value[("heldout_avg", "a")] == 1.0
    # b in-sample: feature 1 has P(.|b) = 4/4, P(.|a) = 3/4 (test a is off), P(.|c) = 0
    assert value[("insample_avg", "b")] == pytest.approx(1 - (3 / 4 + 0) / 2)
    # c: on training, feature 2 (2 of 3 c, nothing else) scores 2/3; on test c has no
    # active token: 0 - 0
    assert feature[("heldout_avg", "c")] == 2 and value[("heldout_avg", "c")] == 0.0
    # average precision of c on test: feature 2 is inactive there, one step at share 1/3
    assert feature[("heldout_ap", "c")] == 2
    assert value[("heldout_ap", "c")] == pytest.approx(1 / 3)
    assert found.loc[found.score == "heldout_ap", "chance"].tolist() == [1 / 3] * 3
    # the chosen features' activation frequencies over all 12 tokens
    assert found.set_index(["score", "label"])["feature_frequency"][("insample_avg", "b")] == (
        pytest.approx(7 / 12)
    )


def test_matched_frequency_refuses_a_feature_that_wins_by_coverage():
    # label a: 10 of 40 training tokens. "broad" fires on every a and on 15 of the 30 others
    # (avg selectivity 1 - 0.5 = 0.5 with equal-sized labels b, c, d); "precise" fires on
    # 4 of 10 a and nothing else (0.4). Matched (<= 2 x 25 %) only "precise" may be chosen.
    n = 40
    labels = np.array(["a", "b", "c", "d"])[np.arange(n) % 4]
    codes = np.zeros((2 * n, 2))
    others = np.flatnonzero(labels != "a")
    broad = np.r_[np.flatnonzero(labels == "a"), others[::2]]
    codes[broad, 0] = codes[broad + n, 0] = 1.0
    precise = np.flatnonzero(labels == "a")[:4]
    codes[precise, 1] = codes[precise + n, 1] = 1.0
    task = design(list(labels) * 2, [TRAIN] * n + [TEST] * n)
    found = task_scores(sp.csr_matrix(codes), task, SETTINGS).table
    rows = found[found.label == "a"].set_index("score")
    assert rows.loc["heldout_avg", "feature"] == 0
    assert rows.loc["heldout_avg", "value"] == pytest.approx(1 - 0.5)
    assert rows.loc["heldout_avg_matched", "feature"] == 1
    assert rows.loc["heldout_avg_matched", "value"] == pytest.approx(0.4)
    assert rows.loc["heldout_avg", "feature_frequency"] == pytest.approx(25 / 40)


def test_null_of_the_best_of_many_random_features_is_the_score_itself():
    # 30 labels with no signal, 200 random features: the paper's best-of-M score is well
    # above 0, but so is its null; held out it is near 0, and nothing is above null.
    rng = np.random.default_rng(1)
    n = 3000
    labels = np.arange(n) % 30
    codes = sp.csr_matrix((rng.random((n, 200)) < 0.05).astype(float))
    side = np.where(rng.random(n) < 0.7, TRAIN, TEST)
    task = design([str(v).zfill(2) for v in labels], side)
    found = task_scores(codes, task, SETTINGS)
    table = found.table.set_index("score")
    insample = table.loc["insample_avg"]
    assert insample["value"].mean() > 0.04  # best of 200 noisy features
    assert (insample["null_mean"] - insample["value"]).abs().mean() < 0.01
    heldout = table.loc["heldout_avg"]
    assert abs(heldout["value"].mean()) < 0.01 and abs(heldout["null_mean"].mean()) < 0.01
    assert not found.table["above_null"].any()
    p = found.table["p_value"]
    assert 0.25 < p.mean() < 0.75  # calibrated: uniform p-values have mean 0.5
    assert not features_above_null(found, 0.05).any()


def test_a_planted_label_is_above_null_at_the_smallest_p_value():
    rng = np.random.default_rng(2)
    n = 2000
    labels = np.arange(n) % 10
    noise = rng.random((n, 50)) < 0.05
    noise[:, 7] = (labels == 3) & (rng.random(n) < 0.6)  # feature 7 marks 60 % of label 3
    side = np.where(rng.random(n) < 0.2, TEST, TRAIN)
    found = task_scores(
        sp.csr_matrix(noise.astype(float)), design([str(v) for v in labels], side), SETTINGS
    )
    planted = found.table[found.table.label == "3"].set_index("score")
    assert (planted["feature"].drop("heldout_ap") == 7).all()
    np.testing.assert_allclose(planted["p_value"], 1 / (SETTINGS.permutations + 1))
    assert planted["above_null"].all()
    # nine labels without signal: FDR control allows a chance discovery, not many (this draw
    # has one in-sample, label 2 at p = 0.01, q = 0.05, and its best feature, 33)
    others = found.table[found.table.label != "3"]
    assert others.groupby("score").above_null.sum().max() <= 1
    above = np.flatnonzero(features_above_null(found, 0.05))
    assert 7 in above and len(above) <= 2


def test_benjamini_hochberg_skips_missing_p_values():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    # by hand: sorted 0.01, 0.03, 0.04, 0.5 over 4 tests -> 0.04, 0.0533, 0.0533, 0.5
    np.testing.assert_allclose(
        benjamini_hochberg(p), [0.04, np.nan, 0.16 / 3, 0.16 / 3, 0.5], equal_nan=True
    )


def test_the_held_out_split_and_the_null_keep_plates_and_wells_whole():
    # 4 plates x 8 wells x 5 sites; a well holds one gene. Grouped by plate, the test side is
    # whole plates and a permutation never moves a gene between plates; without group_by but
    # with wells as units, the test side is whole wells and wells move whole.
    n_plates, n_wells, n_sites = 4, 8, 5
    plate = np.repeat(np.arange(n_plates), n_wells * n_sites)
    well = np.repeat(np.arange(n_plates * n_wells), n_sites)
    gene = np.array(["g1", "g2", "g3", "ctrl"])[well % 4]
    obs = pd.DataFrame({"gene": gene, "plate": plate.astype(str)})
    task = {"name": "gene", "column": "gene", "group_by": "plate", "exclude": ["ctrl"]}
    by_plate = task_design(obs, task, ProbeSettings(), well)
    for p in range(n_plates):
        sides = set(by_plate.side[(plate == p) & (by_plate.label_index >= 0)])
        assert len(sides) == 1, p
    assert {TRAIN, TEST} <= set(by_plate.side)
    found = permutation_design(by_plate.label_index, by_plate.blocks, well)
    assert found.by_unit
    for labels in np.concatenate(list(permuted_labels(found, 20, seed=0))):
        for p in range(n_plates):
            in_plate = plate == p
            expected = np.sort(by_plate.label_index[in_plate])
            np.testing.assert_array_equal(np.sort(labels[in_plate]), expected)
        assert (labels.reshape(-1, n_sites) == labels.reshape(-1, n_sites)[:, :1]).all()
    by_well = task_design(obs, {**task, "group_by": None}, ProbeSettings(), well)
    for w in range(n_plates * n_wells):
        assert len(set(by_well.side[well == w])) == 1, w
    assert {TRAIN, TEST} <= set(by_well.side)
    codes = sp.csr_matrix((np.random.default_rng(3).random((len(obs), 20)) < 0.1) * 1.0)
    table, above = label_score_tables(codes, obs, [task], ProbeSettings(), SETTINGS, well)
    assert sorted(table.label.unique()) == ["g1", "g2", "g3"]
    rows = table[table.score == "heldout_avg"]
    assert (rows.n_train + rows.n_test == rows.n_tokens).all()


def test_selectivity_counts_and_the_paper_score_agree():
    rng = np.random.default_rng(4)
    n = 400
    labels = np.array(["x", "y", "z", "w"])[rng.integers(0, 4, n)]
    codes = sp.csr_matrix((rng.random((n, 15)) < 0.2) * rng.random((n, 15)))
    found = task_scores(codes, design(list(labels), [OTHER] * n), SETTINGS).table
    paper = selectivity(codes, labels)
    insample = found[found.score == "insample_avg"].set_index("label")
    np.testing.assert_allclose(insample.loc[paper.labels, "value"], paper.avg.max(axis=1))
    # without a split nothing is held out: held-out scores are missing, not zero
    assert found.loc[found.score != "insample_avg", "value"].isna().all()
