"""Tests for cellconcepts.evaluate (selectivity, probing, recovery), with hand-computed or
independently computed expectations."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from cellconcepts.evaluate.probing import linear_probe, probe_split_masks
from cellconcepts.evaluate.recovery import atom_recovery
from cellconcepts.evaluate.selectivity import (
    Selectivity,
    best_selectivity_per_label,
    selectivity,
    selectivity_counts,
)


def make_probe_split(*args, **kwargs) -> np.ndarray:
    """The test mask of `probe_split_masks`."""
    return probe_split_masks(*args, **kwargs)[1]


# ----------------------------------------------------------------------------------------------
# Hand-worked selectivity example: 10 tokens, labels A (4 tokens), B (2), C (4); 4 features.
#
#   token  label  f0    f1    f2    f3
#   0      A      1.5   -0.2  .     .
#   1      A      2.0   0.7   .     .
#   2      A      -1.0  .     .     0.3
#   3      A      0.5   .     .     .
#   4      B      .     0.4   -2.0  .
#   5      B      .     0(*)  1.1   0.9
#   6      C      0.2   1.2   .     0.1
#   7      C      .     -0.3  .     0.5
#   8      C      .     .     0(*)  -0.6
#   9      C      .     .     .     .
# (*) explicitly stored zeros: not active.
#
# P(active | label):        f0     f1     f2     f3
#   A                       4/4    2/4    0/4    1/4
#   B                       0/2    1/2    2/2    1/2
#   C                       1/4    2/4    0/4    3/4
# avg = P_i - mean_{j!=i} P_j:
#   f0: A 1-(0+.25)/2=.875   B 0-(1+.25)/2=-.625  C .25-(1+0)/2=-.25
#   f1: all 0
#   f2: A 0-(1+0)/2=-.5      B 1-0=1              C -.5
#   f3: A .25-(.5+.75)/2=-.375  B .5-(.25+.75)/2=0  C .75-(.25+.5)/2=.375
# max = P_i - max_{j!=i} P_j:
#   f0: A 1-.25=.75   B 0-1=-1     C .25-1=-.75
#   f1: all 0
#   f2: A 0-1=-1      B 1-0=1      C 0-1=-1
#   f3: A .25-.75=-.5 B .5-.75=-.25 C .75-.5=.25
# ----------------------------------------------------------------------------------------------

HAND_ENTRIES = [
    (0, 0, 1.5),
    (0, 1, -0.2),
    (1, 0, 2.0),
    (1, 1, 0.7),
    (2, 0, -1.0),
    (2, 3, 0.3),
    (3, 0, 0.5),
    (4, 1, 0.4),
    (4, 2, -2.0),
    (5, 1, 0.0),
    (5, 2, 1.1),
    (5, 3, 0.9),
    (6, 0, 0.2),
    (6, 1, 1.2),
    (6, 3, 0.1),
    (7, 1, -0.3),
    (7, 3, 0.5),
    (8, 2, 0.0),
    (8, 3, -0.6),
]
HAND_LABELS = np.array(["A"] * 4 + ["B"] * 2 + ["C"] * 4)
HAND_P = np.array(
    [
        [1.0, 0.5, 0.0, 0.25],
        [0.0, 0.5, 1.0, 0.5],
        [0.25, 0.5, 0.0, 0.75],
    ]
)
HAND_AVG = np.array(
    [
        [0.875, 0.0, -0.5, -0.375],
        [-0.625, 0.0, 1.0, 0.0],
        [-0.25, 0.0, -0.5, 0.375],
    ]
)
HAND_MAX = np.array(
    [
        [0.75, 0.0, -1.0, -0.5],
        [-1.0, 0.0, 1.0, -0.25],
        [-0.75, 0.0, -1.0, 0.25],
    ]
)


def hand_codes() -> sp.csr_matrix:
    rows, cols, vals = zip(*HAND_ENTRIES, strict=True)
    return sp.csr_matrix((np.array(vals), (np.array(rows), np.array(cols))), shape=(10, 4))


def test_selectivity_hand_example() -> None:
    codes = hand_codes()
    assert codes.nnz == len(HAND_ENTRIES)  # the explicit zeros really are stored
    sel = selectivity(codes, HAND_LABELS)
    assert isinstance(sel, Selectivity)
    assert sel.labels.tolist() == ["A", "B", "C"]
    assert sel.n_per_label.tolist() == [4, 2, 4]
    np.testing.assert_allclose(sel.p_active, HAND_P, atol=1e-12)
    np.testing.assert_allclose(sel.avg, HAND_AVG, atol=1e-12)
    np.testing.assert_allclose(sel.max, HAND_MAX, atol=1e-12)


def test_selectivity_dense_input_matches_sparse() -> None:
    codes = hand_codes()
    sparse_sel = selectivity(codes, HAND_LABELS)
    dense_sel = selectivity(codes.toarray(), pd.Series(HAND_LABELS))
    for field in ("p_active", "avg", "max", "n_per_label"):
        np.testing.assert_array_equal(getattr(dense_sel, field), getattr(sparse_sel, field))
    # the input matrix is not modified (explicit zeros still stored)
    assert codes.nnz == len(HAND_ENTRIES)


def test_selectivity_drops_missing_labels() -> None:
    # an extra token active on every feature, with a missing label, must not change anything
    codes = sp.vstack([hand_codes(), sp.csr_matrix(np.ones((2, 4)))]).tocsr()
    for missing in (None, np.nan):
        labels = pd.Series(list(HAND_LABELS) + [missing, missing], dtype="category")
        sel = selectivity(codes, labels)
        assert sel.n_per_label.tolist() == [4, 2, 4]
        np.testing.assert_allclose(sel.avg, HAND_AVG, atol=1e-12)
        np.testing.assert_allclose(sel.max, HAND_MAX, atol=1e-12)


def test_selectivity_matches_brute_force_on_random_codes() -> None:
    rng = np.random.default_rng(3)
    n, m = 300, 12
    dense = rng.normal(size=(n, m)) * (rng.random((n, m)) < 0.3)
    labels = rng.integers(0, 5, size=n)
    sel = selectivity(sp.csr_matrix(dense), labels)
    assert sel.labels.tolist() == ["0", "1", "2", "3", "4"]
    p = np.array([(dense[labels == c] != 0).mean(axis=0) for c in range(5)])
    for i in range(5):
        others = np.delete(p, i, axis=0)
        np.testing.assert_allclose(sel.avg[i], p[i] - others.mean(axis=0), atol=1e-12)
        np.testing.assert_allclose(sel.max[i], p[i] - others.max(axis=0), atol=1e-12)


def test_selectivity_bad_input() -> None:
    codes = hand_codes()
    with pytest.raises(ValueError, match="at least 2 distinct"):
        selectivity(codes, np.array(["A"] * 10))
    with pytest.raises(ValueError, match="at least 2 distinct"):
        selectivity(codes, np.array(["A"] * 5 + [None] * 5, dtype=object))
    with pytest.raises(ValueError, match="expected 10 labels"):
        selectivity(codes, HAND_LABELS[:9])


def test_selectivity_counts_hand_example() -> None:
    sel = selectivity(hand_codes(), HAND_LABELS)
    # best avg over labels per feature: f0 .875, f1 0, f2 1, f3 .375
    assert selectivity_counts(sel) == {"n_features_sel_0.5": 2, "n_features_sel_0.2": 3}
    assert selectivity_counts(sel, thresholds=(0.9, 0.0)) == {
        "n_features_sel_0.9": 1,
        "n_features_sel_0": 3,
    }


def test_selectivity_counts_constructed() -> None:
    # two labels of 10 tokens each. Feature k is active on all 10 "x" tokens and on k of the
    # "y" tokens: avg for x = 1 - k/10, for y = k/10 - 1 <= 0. So best avg = 1 - k/10 for
    # k = 0..10: > 0.5 for k <= 4 (5 features), > 0.2 for k <= 7 (8 features).
    dense = np.zeros((20, 11))
    for k in range(11):
        dense[:10, k] = 1.0
        dense[10 : 10 + k, k] = -1.0
    labels = ["x"] * 10 + ["y"] * 10
    sel = selectivity(dense, labels)
    np.testing.assert_allclose(sel.avg.max(axis=0), 1 - np.arange(11) / 10, atol=1e-12)
    assert selectivity_counts(sel) == {"n_features_sel_0.5": 5, "n_features_sel_0.2": 8}


def test_best_selectivity_per_label() -> None:
    sel = selectivity(hand_codes(), HAND_LABELS)
    df = best_selectivity_per_label(sel)
    assert list(df.columns) == ["label", "n_tokens", "best_avg", "best_feature", "best_max"]
    # B: best avg 1 (f2), best max 1; A: .875 (f0), best max .75; C: .375 (f3), best max .25
    assert df["label"].tolist() == ["B", "A", "C"]
    assert df["n_tokens"].tolist() == [2, 4, 4]
    np.testing.assert_allclose(df["best_avg"], [1.0, 0.875, 0.375])
    assert df["best_feature"].tolist() == [2, 0, 3]
    np.testing.assert_allclose(df["best_max"], [1.0, 0.75, 0.25])


def test_atom_recovery_permuted_flipped_and_one_replaced() -> None:
    rng = np.random.default_rng(0)
    n_atoms, d = 6, 32
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    perm = rng.permutation(n_atoms)
    signs = np.array([1, -1, 1, -1, -1, 1])
    scales = rng.uniform(0.5, 3.0, size=n_atoms)
    # learned column j is (up to sign and scale) true atom perm[j]; add an all-zero column
    learned = np.zeros((d, n_atoms + 1))
    learned[:, :n_atoms] = (atoms[perm] * (signs * scales)[:, None]).T
    replaced_col = 2
    learned[:, replaced_col] = rng.normal(size=d)  # noise replaces atom perm[2]
    df = atom_recovery(atoms, learned, threshold=0.9)
    assert list(df.columns) == ["atom", "best_abs_cosine", "best_feature", "recovered"]
    assert df["recovered"].sum() == n_atoms - 1
    assert df.recovered.mean() == pytest.approx((n_atoms - 1) / n_atoms)
    lost = perm[replaced_col]
    assert not df.loc[lost, "recovered"]
    noise_cos = np.abs(atoms[lost] @ learned) / np.maximum(np.linalg.norm(learned, axis=0), 1e-300)
    assert df.loc[lost, "best_abs_cosine"] == pytest.approx(noise_cos.max())
    for j, atom in enumerate(perm):
        if j != replaced_col:
            assert df.loc[atom, "best_feature"] == j
            assert df.loc[atom, "best_abs_cosine"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dimension"):
        atom_recovery(atoms, learned.T)


def test_atom_recovery_zero_atom() -> None:
    atoms = np.array([[0.0, 0.0], [1.0, 0.0]])
    df = atom_recovery(atoms, np.eye(2))
    assert df["best_abs_cosine"].tolist() == [0.0, 1.0]
    assert df["recovered"].tolist() == [False, True]


def _grouped_obs(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 400
    obs = pd.DataFrame(
        {
            "experiment": rng.integers(0, 12, size=n).astype(str),
            "cell_type": rng.choice(["t", "b", "nk", "mono"], size=n),
        }
    )
    # a label present in a single experiment: whenever that experiment is in test, those rows
    # must be dropped (it is never in train)
    obs.loc[obs["experiment"] == "3", "cell_type"] = "rare"
    obs.loc[::37, "cell_type"] = None
    return obs


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_probe_split_groups_kept_apart(seed: int) -> None:
    obs = _grouped_obs()
    train, test = probe_split_masks(obs, "cell_type", group_column="experiment", seed=seed)
    assert not (train & test).any()
    assert not (train | test)[obs["cell_type"].isna().to_numpy()].any()
    assert set(obs.loc[train, "experiment"]).isdisjoint(obs.loc[test, "experiment"])
    assert set(obs.loc[test, "cell_type"]) <= set(obs.loc[train, "cell_type"])
    labelled = obs["cell_type"].notna().sum()
    in_test_groups = obs["experiment"].isin(
        set(obs["experiment"]) - set(obs.loc[train, "experiment"])
    )
    n_test_groups_rows = (in_test_groups & obs["cell_type"].notna()).sum()
    assert 0.1 * labelled < n_test_groups_rows < 0.4 * labelled  # about a quarter, whole groups
    if "rare" in set(obs.loc[in_test_groups, "cell_type"]):
        assert "rare" not in set(obs.loc[test, "cell_type"])
    np.testing.assert_array_equal(
        make_probe_split(obs, "cell_type", group_column="experiment", seed=seed), test
    )


def test_probe_split_deterministic_and_seed_dependent() -> None:
    obs = _grouped_obs()
    a = make_probe_split(obs, "cell_type", group_column="experiment", seed=7)
    b = make_probe_split(obs, "cell_type", group_column="experiment", seed=7)
    np.testing.assert_array_equal(a, b)
    others = [
        make_probe_split(obs, "cell_type", group_column="experiment", seed=s) for s in range(5)
    ]
    assert any(not np.array_equal(a, o) for o in others)


def test_probe_split_stratified() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(["a", "b", "c", "d"], [100, 40, 12, 4])
    obs = pd.DataFrame({"label": rng.permutation(y)})
    train, test = probe_split_masks(obs, "label", test_fraction=0.25, seed=0)
    assert not (train & test).any() and (train | test).all()
    counts_test = obs.loc[test, "label"].value_counts()
    assert counts_test.to_dict() == {"a": 25, "b": 10, "c": 3, "d": 1}
    assert set(obs.loc[train, "label"]) == {"a", "b", "c", "d"}


def test_probe_split_singleton_class_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    obs = pd.DataFrame({"label": ["a"] * 20 + ["b"] * 20 + ["solo"]})
    with caplog.at_level(logging.WARNING, logger="cellconcepts.evaluate.probing"):
        for seed in range(6):
            train, test = probe_split_masks(obs, "label", seed=seed)
            assert set(obs.loc[train, "label"]) == {"a", "b", "solo"}
            assert not (train & test).any() and (train | test).all()
    assert "unstratified" in caplog.text


def test_probe_split_bad_input() -> None:
    obs = pd.DataFrame({"label": ["a", "b"] * 5, "g": ["x"] * 10})
    with pytest.raises(ValueError, match="'missing' not found"):
        make_probe_split(obs, "missing")
    with pytest.raises(ValueError, match="at least 2 groups"):
        make_probe_split(obs, "label", group_column="g")
    with pytest.raises(ValueError, match="test_fraction"):
        make_probe_split(obs, "label", test_fraction=1.0)


def _blobs(
    rng: np.random.Generator, sizes: list[int], d: int = 8, sep: float = 6.0
) -> tuple[np.ndarray, np.ndarray]:
    centres = np.eye(len(sizes), d) * sep
    x = np.concatenate([rng.normal(size=(s, d)) + centres[k] for k, s in enumerate(sizes)])
    y = np.repeat([f"class{k}" for k in range(len(sizes))], sizes)
    return x.astype(np.float32), y


def test_linear_probe_separable_blobs() -> None:
    rng = np.random.default_rng(0)
    x_tr, y_tr = _blobs(rng, [60, 60, 60, 60])
    x_te, y_te = _blobs(rng, [30, 30, 30, 30])
    res = linear_probe(x_tr, y_tr, x_te, y_te, seed=0)
    assert res["bta"] > 0.95
    assert res["n_train"] == 240 and res["n_test"] == 120
    assert res["n_classes"] == 4 and res["chance"] == pytest.approx(0.25)
    # sparse input (not centred) works the same way
    res_sp = linear_probe(sp.csr_matrix(x_tr), y_tr, sp.csr_matrix(x_te), y_te, seed=0)
    assert res_sp["bta"] > 0.95


def test_linear_probe_random_labels_near_chance() -> None:
    rng = np.random.default_rng(1)
    x_tr = rng.normal(size=(400, 10))
    x_te = rng.normal(size=(400, 10))
    y_tr = rng.integers(0, 4, size=400)
    y_te = rng.integers(0, 4, size=400)
    res = linear_probe(x_tr, y_tr, x_te, y_te)
    assert res["chance"] == pytest.approx(0.25)
    assert res["bta"] < 0.5


def test_linear_probe_class_imbalance() -> None:
    # overlapping blobs, 19:1 imbalance in train, balanced test set. An unweighted logistic
    # regression shifts its boundary towards the minority class (independent baseline below);
    # the class-balanced probe does not.
    rng = np.random.default_rng(0)
    x_tr, y_tr = _blobs(rng, [570, 30], d=4, sep=1.5)
    x_te, y_te = _blobs(rng, [300, 300], d=4, sep=1.5)
    res = linear_probe(x_tr, y_tr, x_te, y_te)
    assert res["chance"] == pytest.approx(0.5)
    unweighted = LogisticRegression().fit(x_tr, y_tr).predict(x_te)
    baseline = balanced_accuracy_score(y_te, unweighted)
    assert res["bta"] > 0.78
    assert res["bta"] > baseline + 0.05


def test_linear_probe_subsampled() -> None:
    rng = np.random.default_rng(2)
    x_tr, y_tr = _blobs(rng, [380, 20], sep=5.0)
    x_te, y_te = _blobs(rng, [190, 10], sep=5.0)
    sub = linear_probe(x_tr, y_tr, x_te, y_te, max_train=100, seed=3)
    assert sub["n_train"] == 100 and sub["n_classes_train"] == 2
    assert sub["bta"] > 0.9
    again = linear_probe(x_tr, y_tr, x_te, y_te, max_train=100, seed=3)
    assert again == sub


def test_linear_probe_missing_labels_and_bad_input() -> None:
    rng = np.random.default_rng(4)
    x_tr, y_tr = _blobs(rng, [30, 30])
    x_te, y_te = _blobs(rng, [10, 10])
    y_tr = y_tr.astype(object)
    y_tr[:5] = None
    res = linear_probe(x_tr, y_tr, x_te, y_te)
    assert res["n_train"] == 55
    with pytest.raises(ValueError, match="rows but there are"):
        linear_probe(x_tr, y_tr[:-1], x_te, y_te)
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(x_tr, np.array(["a"] * 60), x_te, y_te)


def test_a_single_token_label_is_not_scored():
    """One token relabelled used to make every feature active on it 'selective' for it."""
    from cellconcepts.evaluate.selectivity import task_selectivity_tables

    rng = np.random.default_rng(3)
    codes = sp.random(200, 16, density=0.2, random_state=rng, format="csr")
    labels = np.where(np.arange(200) % 2, "a", "b").astype(object)
    labels[5] = "one"
    obs = pd.DataFrame({"label": labels})
    task = [{"name": "t", "column": "label"}]
    loose, _ = task_selectivity_tables(codes, obs, task, [0.5], min_label_size=1)
    strict, best = task_selectivity_tables(codes, obs, task, [0.5], min_label_size=10)
    assert loose.set_index("task").loc["t", "n_features_sel_0.5"] >= 2  # the artefact
    assert strict.set_index("task").loc["t", "n_features_sel_0.5"] == 0
    assert strict.set_index("task").loc["t", "n_rare_labels"] == 1
    assert sorted(best["label"]) == ["a", "b"]


def test_probe_errors_name_the_task():
    from cellconcepts.evaluate.probing import ProbeSettings, probe_tasks

    obs = pd.DataFrame({"label": ["a"] * 30 + ["b"] * 30, "plate": ["p"] * 60})
    task = [{"name": "gene", "column": "label", "group_by": "plate"}]
    with pytest.raises(ValueError, match=r"task 'gene' \(column 'label'\).*'plate'"):
        probe_tasks({"raw": np.ones((60, 3))}, obs, task, ProbeSettings())


def test_probe_reads_only_the_rows_it_uses_and_scores_as_before():
    """With max_train, probe_tasks subsamples before reading rows; the score equals
    linear_probe's own subsampling of all training rows."""
    from cellconcepts.evaluate.probing import ProbeSettings, probe_tasks, task_split

    rng = np.random.default_rng(0)
    n = 400
    table = pd.DataFrame({"y": rng.choice(["a", "b", "c"], size=n)})
    x = rng.standard_normal((n, 5)) + (table["y"] == "a").to_numpy()[:, None]

    class Recorder(np.ndarray):
        """An array that records which rows are read from it."""

        read: list = []

        def __getitem__(self, index):
            Recorder.read.append(np.asarray(index))
            return np.asarray(self).__getitem__(index)

    features = x.view(Recorder)
    task = {"name": "t", "column": "y"}
    probe = ProbeSettings(max_train=50, max_iter=200)
    (row,) = probe_tasks({"x": features}, table, [task], probe)
    keep, y, train, test, _ = task_split(table, task, probe)
    expected = linear_probe(x[keep][train], y[train], x[keep][test], y[test], max_train=50)
    assert row["bta"] == expected["bta"] and row["n_train"] == 50
    assert sum(len(index) for index in Recorder.read) == 50 + test.sum()


def test_features_above_null_per_task_and_on_any_task() -> None:
    from cellconcepts.evaluate.selectivity import features_above_null_counts

    above = {
        "t1": np.array([True, False, False, True]),
        "t2": np.array([False, False, True, True]),
    }
    # 'any': features 0, 2 and 3 are above null on some task.
    assert features_above_null_counts(pd.Series(["t1", "t2", "any"]), above) == [2, 2, 3]
