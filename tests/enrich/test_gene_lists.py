"""Feature -> gene lists: vectorised Welch tests, activation groups, DE lists and selective genes.

Expectations come from scipy (``ttest_ind``, ``false_discovery_control``), from hand-built codes
whose groups are known by construction, and from selectivities computed with plain loops.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from cellconcepts.enrich import differential_expression as de
from cellconcepts.enrich import gene_lists as fg

# ------------------------------------------------------------------------- differential_expression


def _welch_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log1p counts (120 cells, 15 genes) and, for 3 features, the strong cells (a subset of the
    active cells) and the active cells, as (cells, 3) boolean masks."""
    rng = np.random.default_rng(seed)
    n_cells, n_genes, n_pairs = 120, 15, 3
    rates = rng.uniform(0.3, 4.0, n_genes)
    expression = np.log1p(rng.poisson(rates, (n_cells, n_genes)).astype(np.float64))
    active = rng.random((n_cells, n_pairs)) < 0.6
    strong = active & (rng.random((n_cells, n_pairs)) < 0.5)
    expression[strong[:, 0], 3] += 1.5  # one real difference
    assert (strong.sum(axis=0) >= 5).all() and ((~active).sum(axis=0) >= 5).all()
    return expression, strong, active


def _welch_via_sums(
    expression: np.ndarray | sp.csr_matrix, strong: np.ndarray, active: np.ndarray
) -> tuple[de.GroupMoments, de.GroupMoments, np.ndarray, np.ndarray]:
    """Strong cells vs cells outside ``active``, the way feature_genes computes it."""
    total = de.group_sums(expression, np.ones((expression.shape[0], 1)))
    a = de.group_sums(expression, sp.csc_matrix(strong.astype(np.float64))).moments()
    b = de.group_sums(expression, active.astype(np.float64)).complement(total).moments()
    t, p = de.welch_t_test(a, b)
    return a, b, t, p


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_welch_t_test_equals_scipy_ttest_ind(sparse: bool) -> None:
    expression, strong, active = _welch_case(seed=5)
    x = sp.csr_matrix(expression) if sparse else expression
    a, b, t, p = _welch_via_sums(x, strong, active)
    assert t.shape == p.shape == (3, expression.shape[1])

    for j in range(strong.shape[1]):
        in_a = expression[strong[:, j]]
        in_b = expression[~active[:, j]]
        np.testing.assert_array_equal(a.n[j], in_a.shape[0])
        np.testing.assert_array_equal(b.n[j], in_b.shape[0])
        np.testing.assert_allclose(a.mean[j], in_a.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(b.mean[j], in_b.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(a.var[j], in_a.var(axis=0, ddof=1), rtol=1e-9)
        np.testing.assert_allclose(b.var[j], in_b.var(axis=0, ddof=1), rtol=1e-9)
        reference = stats.ttest_ind(in_a, in_b, equal_var=False, axis=0)
        np.testing.assert_allclose(t[j], reference.statistic, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(p[j], reference.pvalue, rtol=1e-8, atol=1e-300)
    assert p[0, 3] < 1e-6  # the planted difference is found


def test_welch_t_test_constant_groups_and_single_cells() -> None:
    # gene 0: zero everywhere (equal means) -> NaN; gene 1: 1 in a, 0 in b -> +inf, p = 0
    expression = np.zeros((8, 2))
    expression[:3, 1] = 1.0
    a_mask = np.zeros((8, 2))
    a_mask[:3, 0] = 1.0  # pair 0: cells 0-2 vs the rest
    a_mask[0, 1] = 1.0  # pair 1: a single cell -> NaN variance
    total = de.group_sums(expression, np.ones((8, 1)))
    sums = de.group_sums(expression, a_mask)
    a, b = sums.moments(), sums.complement(total).moments()
    assert np.isnan(a.var[1]).all()
    t, p = de.welch_t_test(a, b)
    assert np.isnan(t[0, 0])
    assert t[0, 1] == np.inf and p[0, 1] == 0.0
    assert np.isnan(t[1]).all()


def test_group_sums_rejects_groups_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="expected 5 rows"):
        de.group_sums(np.zeros((5, 3)), np.ones((4, 2)))


def test_log2_fold_change_on_the_linear_scale() -> None:
    rng = np.random.default_rng(3)
    mean_a = rng.uniform(0, 4, (4, 20))
    mean_b = rng.uniform(0, 4, (4, 20))
    mean_a[0, :3] = 0.0  # zero means: the epsilon keeps the ratio finite
    mean_b[1, :3] = 0.0
    expected = np.log2((np.expm1(mean_a) + 1e-9) / (np.expm1(mean_b) + 1e-9))
    np.testing.assert_allclose(de.log2_fold_change(mean_a, mean_b), expected, rtol=1e-12)
    assert de.log2_fold_change(np.zeros(1), np.zeros(1))[0] == 0.0
    # expm1(log1p(7)) / expm1(log1p(1)) = 7 / 1
    assert de.log2_fold_change(np.log1p([7.0]), np.log1p([1.0]))[0] == pytest.approx(np.log2(7))


# --------------------------------------------------------------------------- activation_groups

N_CELLS = 100


def _activation_codes() -> tuple[np.ndarray, dict[int, dict[str, object]]]:
    """(100 cells, 7 features) codes and, per feature, its expected groups at percentile 50,
    min_cells 5."""
    codes = np.zeros((N_CELLS, 7))
    # f0: cells 0-39 with values 1..40; median 20.5 -> values 21..40, cells 20-39
    codes[:40, 0] = np.arange(1, 41)
    # f1: signed, mostly negative: cells 40-69 with -1..-30, cells 70-74 with +0.5;
    # median magnitude 15.5 -> values -16..-30, cells 55-69
    codes[40:70, 1] = -np.arange(1, 31)
    codes[70:75, 1] = 0.5
    # f2: 6 active cells; the 3 above the median are < 5 -> all 6 used
    codes[75:81, 2] = np.arange(1, 7)
    # f3: 2 positive, 1 negative: only 2 cells of the dominant sign
    codes[[81, 82, 83], 3] = [2.0, 2.0, -1.0]
    # f4: active on 97 cells, 3 zero cells < 5
    codes[:97, 4] = np.arange(1, 98)
    # f5: never active
    # f6: 10 positive and 10 negative cells: a tie goes to +1
    codes[:10, 6] = np.arange(1, 11)
    codes[10:20, 6] = -np.arange(1, 11)
    expected: dict[int, dict[str, object]] = {
        0: {"strong": range(20, 40), "active": range(40), "sign": 1, "status": fg.OK},
        1: {"strong": range(55, 70), "active": range(40, 75), "sign": -1, "status": fg.OK},
        2: {"strong": range(75, 81), "active": range(75, 81), "sign": 1},
        3: {"active": [81, 82, 83], "sign": 1, "status": fg.TOO_FEW_ACTIVE},
        4: {"strong": range(48, 97), "active": range(97), "sign": 1, "status": fg.TOO_FEW_ZERO},
        5: {"active": [], "sign": 1, "status": fg.TOO_FEW_ACTIVE},
        6: {"strong": range(5, 10), "active": range(20), "sign": 1, "status": fg.OK},
    }
    expected[2]["status"] = fg.ALL_ACTIVE_CELLS
    return codes, expected


def _column(matrix: sp.spmatrix, j: int) -> set[int]:
    column = matrix[:, [j]].toarray().ravel()
    assert set(np.unique(column)) <= {0.0, 1.0}
    return {int(i) for i in np.flatnonzero(column)}


@pytest.mark.parametrize("as_sparse", [False, True], ids=["dense", "csr-with-explicit-zeros"])
def test_activation_groups_on_hand_built_codes(as_sparse: bool) -> None:
    codes, expected = _activation_codes()
    if as_sparse:
        csr = sp.csr_matrix(codes)
        # explicitly stored zeros are not activations
        extra = sp.csr_matrix((np.zeros(3), ([90, 91, 92], [0, 5, 2])), shape=codes.shape)
        codes = sp.csr_matrix(
            (
                np.r_[csr.tocoo().data, extra.tocoo().data],
                (np.r_[csr.tocoo().row, [90, 91, 92]], np.r_[csr.tocoo().col, [0, 5, 2]]),
            ),
            shape=codes.shape,
        )
        assert codes.nnz == csr.nnz + 3

    strong, active, table = fg.activation_groups(codes, percentile=50, min_cells=5)

    assert strong.shape == active.shape == (N_CELLS, 7)
    assert list(table["feature"]) == list(range(7))
    for f, exp in expected.items():
        row = table.iloc[f]
        assert _column(active, f) == set(exp["active"]), f
        assert row["n_active"] == len(exp["active"])
        assert row["n_zero"] == N_CELLS - len(exp["active"])
        assert row["sign"] == exp["sign"], f
        assert row["status"] == exp["status"], f
        assert row["n_strong"] == len(_column(strong, f))
        if "strong" in exp:
            assert _column(strong, f) == set(exp["strong"]), f
            assert _column(strong, f) <= _column(active, f)
    assert table.loc[0, "activation_threshold"] == pytest.approx(20.5)
    assert table.loc[1, "activation_threshold"] == pytest.approx(-15.5)
    assert table.loc[4, "activation_threshold"] == pytest.approx(49.0)
    assert table.loc[5, "activation_threshold"] == 0.0


def test_activation_groups_percentile_choice() -> None:
    codes, _ = _activation_codes()
    # 75th percentile of 1..40 (linear interpolation): 30.25 -> values 31..40, cells 30-39
    strong, _, table = fg.activation_groups(codes, percentile=75, min_cells=5)
    assert _column(strong, 0) == set(range(30, 40))
    assert table.loc[0, "activation_threshold"] == pytest.approx(30.25)
    # percentile 0: every cell of the dominant sign (f1: the 30 negative cells, not the 5 positive)
    strong, _, table = fg.activation_groups(codes, percentile=0, min_cells=5)
    assert _column(strong, 0) == set(range(40))
    assert _column(strong, 1) == set(range(40, 70))
    assert table.loc[1, "status"] == fg.OK
    # min_cells 20: f0 has exactly 20 strong cells (OK); f1's 15 strong -> all 30 negative cells
    strong, _, table = fg.activation_groups(codes, percentile=50, min_cells=20)
    assert table.loc[0, "status"] == fg.OK
    assert table.loc[1, "status"] == fg.ALL_ACTIVE_CELLS
    assert _column(strong, 1) == set(range(40, 70))
    # the threshold reported is the one used: the weakest activation of the dominant sign
    assert table.loc[1, "activation_threshold"] == pytest.approx(-1.0)
    assert table.loc[2, "status"] == fg.TOO_FEW_ACTIVE


@pytest.mark.parametrize("percentile", [-1, 100, 150])
def test_activation_groups_invalid_percentile_raises(percentile: float) -> None:
    with pytest.raises(ValueError, match="active_percentile"):
        fg.activation_groups(np.ones((10, 2)), percentile=percentile, min_cells=2)


# --------------------------------------------------------------------------- expression lists

UP_GENES = {"G0", "G1", "G2", "G3", "G4"}
DOWN_GENES = {"G5", "G6"}


def _simulate_expression(seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """log1p counts (300 cells, 30 genes) and codes (300, 3).

    Feature 0 is active on cells 0-149 with values 1..150, so at percentile 50 its strongly active
    cells are 75-149 and its zero cells 150-299; those strong cells over-express G0-G4 (Poisson
    30 vs 3) and hardly express G5-G6. Feature 1 is active on a random half of the cells, without
    effect. Feature 2 is active on 3 cells only. Returns the expression, gene names, codes and
    feature 1's strongly active cells.
    """
    rng = np.random.default_rng(seed)
    n_cells, n_genes = 300, 30
    counts = rng.poisson(3.0, (n_cells, n_genes)).astype(np.float64)
    strong = np.arange(75, 150)
    counts[np.ix_(strong, np.arange(5))] = rng.poisson(30.0, (strong.size, 5))
    counts[np.ix_(strong, [5, 6])] = rng.poisson(0.02, (strong.size, 2))
    codes = np.zeros((n_cells, 3))
    codes[:150, 0] = np.arange(1, 151)
    active_1 = rng.choice(n_cells, 150, replace=False)
    values_1 = rng.uniform(0.1, 5.0, active_1.size)
    codes[active_1, 1] = values_1
    codes[[3, 200, 250], 2] = 1.0
    strong_1 = active_1[np.argsort(values_1)[75:]]  # the 75 largest of 150 distinct values
    genes = [f"G{i}" for i in range(n_genes)]
    return np.log1p(counts), genes, codes, np.sort(strong_1)


def _check_lists_match_index(result: fg.GeneLists) -> None:
    """Row i of ``lists`` holds exactly the genes_table genes of index row i."""
    assert result.lists.shape == (len(result.index), result.genes.size)
    assert set(np.unique(result.lists.data)) <= {1.0}
    pairs = list(result.index.itertuples(index=False, name=None))
    assert len(set(pairs)) == len(pairs)
    assert set(pairs) == set(
        result.genes_table[["feature", "direction"]].itertuples(index=False, name=None)
    )
    for i, (feature, direction) in enumerate(pairs):
        in_table = result.genes_table[
            (result.genes_table["feature"] == feature)
            & (result.genes_table["direction"] == direction)
        ]
        row = result.lists.getrow(i)
        assert set(result.genes[row.indices]) == set(in_table["gene"])
        assert row.nnz == len(in_table)


def test_expression_gene_lists_finds_the_planted_genes() -> None:
    expression, genes, codes, _ = _simulate_expression()
    result = fg.expression_gene_lists(expression, genes, codes, percentile=50, min_cells=10)

    table = result.genes_table
    up = table[(table["feature"] == 0) & (table["direction"] == fg.UP)]
    down = table[(table["feature"] == 0) & (table["direction"] == fg.DOWN)]
    assert set(up["gene"]) == UP_GENES
    assert set(down["gene"]) == DOWN_GENES
    assert (up["log2_fold_change"] >= 1).all() and (up["statistic"] > 0).all()
    assert (down["log2_fold_change"] <= -1).all() and (down["statistic"] < 0).all()
    assert set(table["feature"]) == {0}

    # statistics against scipy on the groups known by construction
    a, b = expression[75:150], expression[150:]
    reference = stats.ttest_ind(a, b, equal_var=False, axis=0)
    q = stats.false_discovery_control(reference.pvalue)
    lfc = np.log2((np.expm1(a.mean(axis=0)) + 1e-9) / (np.expm1(b.mean(axis=0)) + 1e-9))
    column = [genes.index(g) for g in table["gene"]]
    np.testing.assert_allclose(table["p_value"], reference.pvalue[column], rtol=1e-6)
    np.testing.assert_allclose(table["statistic"], reference.statistic[column], rtol=1e-8)
    np.testing.assert_allclose(table["fdr"], q[column], rtol=1e-6)
    np.testing.assert_allclose(table["log2_fold_change"], lfc[column], rtol=1e-9)

    features = result.features.set_index("feature")
    assert features.loc[0, "status"] == fg.OK
    assert features.loc[1, "status"] == fg.NO_DE_GENES
    assert features.loc[2, "status"] == fg.TOO_FEW_ACTIVE
    assert features[["n_up", "n_down"]].to_dict("index") == {
        0: {"n_up": 5, "n_down": 2},
        1: {"n_up": 0, "n_down": 0},
        2: {"n_up": 0, "n_down": 0},
    }
    assert features.loc[0, "n_strong"] == 75 and features.loc[0, "n_zero"] == 150

    assert list(result.genes) == genes
    assert list(result.index.itertuples(index=False, name=None)) == [(0, fg.UP), (0, fg.DOWN)]
    _check_lists_match_index(result)
    assert set(result.genes[result.lists.getrow(0).indices]) == UP_GENES
    assert set(result.genes[result.lists.getrow(1).indices]) == DOWN_GENES


def test_expression_gene_lists_every_gene_with_loose_thresholds() -> None:
    """fdr above 1 and no fold-change threshold list every gene of every tested feature, so every
    p-value can be checked, also for the feature without effect (strong cells vs zero cells)."""
    expression, genes, codes, strong_1 = _simulate_expression()
    result = fg.expression_gene_lists(
        expression, genes, codes, fdr=1.01, min_log2_fold_change=0.0, min_cells=10
    )
    table = result.genes_table
    zero_1 = np.flatnonzero(codes[:, 1] == 0)
    for feature, strong, zero in [
        (0, np.arange(75, 150), np.arange(150, 300)),
        (1, strong_1, zero_1),
    ]:
        rows = table[table["feature"] == feature].set_index("gene").loc[genes]
        reference = stats.ttest_ind(expression[strong], expression[zero], equal_var=False, axis=0)
        np.testing.assert_allclose(rows["p_value"], reference.pvalue, rtol=1e-7)
        np.testing.assert_allclose(
            rows["fdr"], stats.false_discovery_control(reference.pvalue), rtol=1e-7
        )
        assert ((rows["direction"] == fg.UP) == (rows["log2_fold_change"] >= 0)).all()
    assert set(table["feature"]) == {0, 1}
    _check_lists_match_index(result)


def test_expression_gene_lists_sparse_input_and_chunks_agree() -> None:
    expression, genes, codes, _ = _simulate_expression()
    reference = fg.expression_gene_lists(expression, genes, codes, min_cells=10)
    for other in (
        fg.expression_gene_lists(sp.csr_matrix(expression), genes, sp.csr_matrix(codes)),
        fg.expression_gene_lists(expression, genes, codes, min_cells=10, chunk_size=1),
    ):
        pd.testing.assert_frame_equal(other.features, reference.features)
        pd.testing.assert_frame_equal(other.index, reference.index)
        pd.testing.assert_frame_equal(
            other.genes_table, reference.genes_table, check_exact=False, rtol=1e-9
        )
        assert (other.lists != reference.lists).nnz == 0


def test_expression_gene_lists_scanpy_t_test_agrees_with_welch() -> None:
    pytest.importorskip("scanpy")
    expression, genes, codes, _ = _simulate_expression()
    welch = fg.expression_gene_lists(expression, genes, codes, min_cells=10, method="welch")
    scanpy = fg.expression_gene_lists(expression, genes, codes, min_cells=10, method="t-test")

    pd.testing.assert_frame_equal(scanpy.features, welch.features)
    pd.testing.assert_frame_equal(scanpy.index, welch.index)
    key = ["feature", "direction", "gene"]
    mine = welch.genes_table.sort_values(key, ignore_index=True)
    theirs = scanpy.genes_table.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(mine[key], theirs[key])
    assert set(theirs.loc[theirs["direction"] == fg.UP, "gene"]) == UP_GENES
    assert set(theirs.loc[theirs["direction"] == fg.DOWN, "gene"]) == DOWN_GENES
    for column in ("p_value", "fdr", "log2_fold_change", "statistic"):
        np.testing.assert_allclose(theirs[column], mine[column], rtol=1e-6, err_msg=column)

    # every gene of both tested features, including the unremarkable p-values
    loose = {"fdr": 1.01, "min_log2_fold_change": 0.0, "min_cells": 10}
    welch = fg.expression_gene_lists(expression, genes, codes, method="welch", **loose)
    scanpy = fg.expression_gene_lists(expression, genes, codes, method="t-test", **loose)
    mine = welch.genes_table.sort_values(key, ignore_index=True)
    theirs = scanpy.genes_table.sort_values(key, ignore_index=True)
    assert len(mine) == 2 * len(genes)
    pd.testing.assert_frame_equal(mine[key], theirs[key])
    for column in ("p_value", "fdr", "log2_fold_change", "statistic"):
        np.testing.assert_allclose(theirs[column], mine[column], rtol=1e-6, err_msg=column)


def test_expression_gene_lists_invalid_input_raises() -> None:
    expression, genes, codes, _ = _simulate_expression()
    with pytest.raises(ValueError, match="expected shape"):
        fg.expression_gene_lists(expression[:, :-1], genes, codes)
    with pytest.raises(ValueError, match="expected shape"):
        fg.expression_gene_lists(expression, genes[:-1], codes)
    with pytest.raises(ValueError, match="expected shape"):
        fg.expression_gene_lists(expression, genes, codes[:-1])
    with pytest.raises(ValueError, match="de_method"):
        fg.expression_gene_lists(expression, genes, codes, method="limma")


def test_expression_gene_lists_without_testable_features() -> None:
    expression, genes, codes, _ = _simulate_expression()
    result = fg.expression_gene_lists(expression, genes, codes[:, [2]], min_cells=10)
    assert list(result.features["status"]) == [fg.TOO_FEW_ACTIVE]
    assert result.lists.shape == (0, len(genes))
    assert len(result.index) == 0 and len(result.genes_table) == 0


# --------------------------------------------------------------------------- selective lists

SCREENED = ["A", "B", "C", "D", "E", "F"]
CONTROL = "NT"
CELLS_PER_LABEL = 10


def _screen() -> tuple[np.ndarray, pd.Series]:
    """Codes (70 cells, 5 features) over 6 screened genes and a control, 10 cells each, shuffled.

    f0: active on every cell of A, B and C. f1: active on 9, 6, 3, 1, 0, 0 of the cells of A-F
    and 5 of the control's. f2: never active. f3: active on every control cell only. f4: negative
    (signed codes) on every cell of D.
    """
    rng = np.random.default_rng(7)
    labels = np.repeat(np.array([*SCREENED, CONTROL], dtype=object), CELLS_PER_LABEL)
    within = np.tile(np.arange(CELLS_PER_LABEL), len(SCREENED) + 1)  # position within its label
    codes = np.zeros((labels.size, 5))
    codes[np.isin(labels, ["A", "B", "C"]), 0] = rng.uniform(0.5, 2.0, 30)
    f1_counts = {"A": 9, "B": 6, "C": 3, "D": 1, "E": 0, "F": 0, CONTROL: 5}
    for label, count in f1_counts.items():
        codes[(labels == label) & (within < count), 1] = 1.0
    codes[labels == CONTROL, 3] = 3.0
    codes[labels == "D", 4] = -2.0
    order = rng.permutation(labels.size)
    return codes[order], pd.Series(labels[order], index=np.arange(100, 100 + labels.size))


def _expected_avg_selectivity(codes: np.ndarray, labels: pd.Series) -> pd.DataFrame:
    """(screened genes, features): P(active | gene) - mean of P(active | other label), the
    control included among the other labels."""
    values = labels.to_numpy()
    all_labels = [*SCREENED, CONTROL]
    p = pd.DataFrame(
        [
            [float(np.mean(codes[values == lab, f] != 0)) for f in range(codes.shape[1])]
            for lab in all_labels
        ],
        index=all_labels,
    )
    out = pd.DataFrame(index=SCREENED, columns=range(codes.shape[1]), dtype=np.float64)
    for gene in SCREENED:
        others = [lab for lab in all_labels if lab != gene]
        out.loc[gene] = p.loc[gene] - p.loc[others].mean(axis=0)
    return out


def _listed(result: fg.GeneLists) -> dict[int, list[str]]:
    table = result.genes_table
    return {int(f): list(block["gene"]) for f, block in table.groupby("feature")}


def test_selective_gene_lists_threshold_and_top_n_fallback() -> None:
    codes, labels = _screen()
    result = fg.selective_gene_lists(
        codes, labels, controls=[CONTROL], min_selectivity=0.2, top_n=3
    )

    expected_avg = _expected_avg_selectivity(codes, labels)
    # f0: A, B, C at 1 - 2/6; f1 by hand: (7 p - 2.4) / 6
    assert expected_avg.loc["A", 0] == pytest.approx(2 / 3)
    assert expected_avg.loc["A", 1] == pytest.approx((6.3 - 2.4) / 6)
    assert expected_avg.loc["C", 1] == pytest.approx((2.1 - 2.4) / 6)

    assert list(result.genes) == SCREENED  # the control is not in the background
    assert CONTROL not in set(result.genes_table["gene"])
    # f0: 3 genes pass 0.2 (>= top_n 3); f1: A and B pass (2 < 3) -> the top 3 with positive
    # selectivity, still A and B; f4: D alone (signed activations count)
    assert _listed(result) == {0: ["A", "B", "C"], 1: ["A", "B"], 4: ["D"]}
    features = result.features.set_index("feature")
    assert list(features["selection"]) == ["threshold", "top_n", "top_n", "top_n", "top_n"]
    assert list(features["status"]) == [
        fg.OK,
        fg.OK,
        fg.NO_SELECTIVE_GENES,  # never active
        fg.NO_SELECTIVE_GENES,  # active on control cells only: every screened gene negative
        fg.OK,
    ]
    assert list(features["n_selective"]) == [3, 2, 0, 0, 1]
    np.testing.assert_allclose(
        features["best_gene_selectivity"], expected_avg.max(axis=0).to_numpy(), rtol=1e-12
    )
    assert expected_avg[3].max() == pytest.approx(-1 / 6)

    table = result.genes_table
    np.testing.assert_allclose(
        table["avg_selectivity"],
        [expected_avg.loc[g, f] for g, f in zip(table["gene"], table["feature"], strict=True)],
        rtol=1e-12,
    )
    assert list(table["selectivity_rank"]) == [1, 1, 1, 1, 2, 1]  # A, B, C tie for f0
    assert (table["direction"] == fg.SELECTIVE).all()
    assert list(result.index.itertuples(index=False, name=None)) == [
        (0, fg.SELECTIVE),
        (1, fg.SELECTIVE),
        (4, fg.SELECTIVE),
    ]
    _check_lists_match_index(result)


def test_selective_gene_lists_min_selectivity_too_high_falls_back_to_top_n() -> None:
    codes, labels = _screen()
    result = fg.selective_gene_lists(
        codes, labels, controls=[CONTROL], min_selectivity=0.99, top_n=3
    )
    # nothing passes 0.99 (f4's D is at exactly 1 - 0 = 1 and passes: 1 < 3 -> top_n anyway)
    assert _listed(result) == {0: ["A", "B", "C"], 1: ["A", "B"], 4: ["D"]}
    assert set(result.features["selection"]) == {"top_n"}

    # top_n 1: the single best gene with positive selectivity
    result = fg.selective_gene_lists(
        codes, labels, controls=[CONTROL], min_selectivity=0.99, top_n=1
    )
    assert _listed(result)[1] == ["A"]
    assert _listed(result)[4] == ["D"]
    assert result.features.loc[4, "selection"] == "threshold"  # D passes and 1 >= top_n


def test_selective_gene_lists_without_min_selectivity_always_takes_top_n() -> None:
    codes, labels = _screen()
    result = fg.selective_gene_lists(
        codes, labels, controls=[CONTROL], min_selectivity=None, top_n=2
    )
    assert set(result.features["selection"]) == {"top_n"}
    listed = _listed(result)
    assert listed[1] == ["A", "B"]
    assert listed[4] == ["D"]
    assert listed[0] == ["A", "B", "C"]  # tied at 2/3 at the cut: all three are listed
    assert 2 not in listed and 3 not in listed


def test_selective_gene_lists_top_n_zero_uses_the_threshold_only() -> None:
    codes, labels = _screen()
    result = fg.selective_gene_lists(
        codes, labels, controls=[CONTROL], min_selectivity=0.5, top_n=0
    )
    # A for f1: 0.65 >= 0.5, B: 0.3 < 0.5
    assert _listed(result) == {0: ["A", "B", "C"], 1: ["A"], 4: ["D"]}
    assert set(result.features["selection"]) == {"threshold"}


def test_selective_gene_lists_needs_two_screened_genes() -> None:
    codes, labels = _screen()
    with pytest.raises(ValueError, match="at least 2 screened genes"):
        fg.selective_gene_lists(codes, labels, controls=[CONTROL, *SCREENED[1:]])


# --------------------------------------------------------------------------- screen_controls


@pytest.fixture
def screen_obs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "gene": ["NTC", "NTC", "GENE1", "GENE2", "MIXED", "MIXED", "ONLYCTRL", None],
            "perturbation": ["p0", "p0", "p1", "p2", "p3", "p3", "p4", "p5"],
            "is_control": [True, True, False, False, True, False, True, True],
        }
    )


def test_screen_controls_configured_values_and_control_only_values(
    screen_obs: pd.DataFrame,
) -> None:
    dataset = {"control": {"column": "gene", "values": ["Scrambled", "NTC"]}}
    assert fg.screen_controls(dataset["control"], screen_obs, "gene") == [
        "NTC",
        "ONLYCTRL",
        "Scrambled",
    ]


def test_screen_controls_without_config(screen_obs: pd.DataFrame) -> None:
    assert fg.screen_controls(None, screen_obs, "gene") == ["NTC", "ONLYCTRL"]
    assert fg.screen_controls(None, screen_obs, "gene") == ["NTC", "ONLYCTRL"]


def test_screen_controls_config_on_another_column_is_ignored(screen_obs: pd.DataFrame) -> None:
    dataset = {"control": {"column": "perturbation", "values": ["GENE1", "p1"]}}
    assert fg.screen_controls(dataset["control"], screen_obs, "gene") == ["NTC", "ONLYCTRL"]
    # on the perturbation column: the configured values, and p0, p4, p5 (control rows only)
    assert fg.screen_controls(dataset["control"], screen_obs, "perturbation") == [
        "GENE1",
        "p0",
        "p1",
        "p4",
        "p5",
    ]


def test_screen_controls_mixed_values_are_screened(screen_obs: pd.DataFrame) -> None:
    out = fg.screen_controls(None, screen_obs, "gene")
    assert "MIXED" not in out
    assert "GENE1" not in out
    assert not any(v in out for v in ["None", "nan", "<NA>"])  # missing genes are no value


# --------------------------------------------------------------------------- screen background


def test_screened_genes_leaves_out_the_controls_in_label_order() -> None:
    out = fg.screened_genes(["G2", "NTC", "G1", "SCR"], ["NTC", "SCR", "ABSENT"])
    assert out.dtype == object
    assert list(out) == ["G2", "G1"]
    assert list(fg.screened_genes(["G1"], [])) == ["G1"]


def test_screen_gene_labels_normalises_and_keeps_missing() -> None:
    obs = pd.DataFrame({"gene": [" g1", "Ntc", None, "G1 ", np.nan]})
    labels = fg.screen_gene_labels(obs, "gene")
    assert list(labels[[0, 1, 3]]) == ["G1", "NTC", "G1"]
    assert labels[[2, 4]].isna().all()
    with pytest.raises(ValueError, match="no column 'perturbed'"):
        fg.screen_gene_labels(obs, "perturbed")


def test_screen_background_is_the_background_of_the_selective_lists(
    screen_obs: pd.DataFrame,
) -> None:
    obs = screen_obs.assign(
        gene=["NTC", "ntc", "gene1", "GENE2", "MIXED", "MIXED", "OnlyCtrl", None]
    )
    control = {"column": "gene", "values": ["NTC"]}
    # NTC and ntc (configured, or on control rows only) and ONLYCTRL (control rows only) are left
    # out; MIXED (on a control and a screened row) stays; symbols upper-cased and sorted
    background = fg.screen_background(obs, "gene", control)
    assert list(background) == ["GENE1", "GENE2", "MIXED"]
    codes = sp.csr_matrix(np.eye(8)[:, :2])
    lists = fg.feature_gene_lists(
        "screen",
        codes,
        obs,
        {"screen": {"gene_column": "gene", "min_selectivity": None, "top_n": 1}},
        control=control,
        expression_source=None,
    )
    assert list(lists.genes) == list(background)
