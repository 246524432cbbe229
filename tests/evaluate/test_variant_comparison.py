"""Comparisons between dictionary variants over units and model seeds: resampled scores agree
with the point scores and with scikit-learn, seeds widen the intervals, every pair is formed."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import average_precision_score

from cellconcepts.evaluate.label_scores import (
    SCORES,
    TEST,
    TRAIN,
    SignificanceSettings,
    TaskDesign,
    task_scores,
)
from cellconcepts.evaluate.variant_comparison import (
    MEAN_LABEL,
    VariantSamples,
    chosen_and_points,
    claim_table,
    comparison_tables,
    score_samples,
    variant_samples,
    verdict_counts,
)


def toy(seed: int = 0, n: int = 600) -> tuple[sp.csr_matrix, TaskDesign]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    codes = (rng.random((n, 12)) < 0.15) * rng.random((n, 12))
    codes[:, 0] += (labels == 1) * (rng.random(n) < 0.7)
    side = np.where(rng.random(n) < 0.3, TEST, TRAIN)
    design = TaskDesign(
        "t", np.array(["a", "b", "c", "d"]), labels, side, np.zeros(n, np.int64), None
    )
    return sp.csr_matrix(codes), design


def test_unit_weights_reproduce_the_label_scores():
    codes, design = toy()
    settings = SignificanceSettings(permutations=9, seed=0, fdr=0.05, matched_frequency=2.0)
    table = task_scores(codes, design, settings).table
    chosen, points = chosen_and_points(table, "t", design.classes)
    ones = np.ones((2, codes.shape[0]))
    for score, values in score_samples(codes, design, chosen, ones).items():
        np.testing.assert_allclose(values[0], points[score], atol=1e-12, err_msg=score)
        np.testing.assert_allclose(values[1], points[score], atol=1e-12, err_msg=score)


def test_weighted_average_precision_samples_equal_scikit_learn():
    codes, design = toy(1)
    rng = np.random.default_rng(2)
    weights = rng.integers(0, 3, (3, codes.shape[0])).astype(float)
    chosen = {"heldout_ap": np.array([3, 0, 5, -1])}
    got = score_samples(codes, design, chosen, weights)["heldout_ap"]
    test = design.side == TEST
    for r in range(3):
        for label, feature in enumerate([3, 0, 5]):
            expected = average_precision_score(
                design.label_index[test] == label,
                abs(codes[:, feature].toarray().ravel()[test]),
                sample_weight=weights[r, test],
            )
            assert got[r, label] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(got[:, 3]).all()  # no chosen feature


def samples(values: dict[tuple[str, str, int], list[float]], replicates: int = 400):
    """VariantSamples of one label whose seeds have fixed ``values`` (no sampling noise)."""
    point = {
        key: {s: np.array(v, dtype=float)[:, None] for s in SCORES} for key, v in values.items()
    }
    drawn = {
        key: {s: np.repeat(np.array(v, dtype=float)[:, None, None], replicates, 1) for s in SCORES}
        for key, v in values.items()
    }
    return VariantSamples("t", np.array(["a"]), point, drawn)


def test_seeds_widen_the_interval_and_decide_the_verdict():
    found = samples(
        {
            ("icfl", "pca", 8): [0.9, 0.1, 0.5],  # mean 0.5, seeds far apart
            ("topk", "pca", 8): [0.5, 0.5, 0.5],
            ("icfl", "none", 8): [0.2, 0.2, 0.2],
        }
    )
    intervals, differences = comparison_tables(found, level=0.95, seed=0)
    rows = differences[(differences.label == "a") & (differences.score == "insample_avg")]
    rows = rows.set_index(["first", "second"])
    spread = rows.loc[("icfl_pca", "topk_pca")]
    assert spread["difference"] == pytest.approx(0.0)
    assert spread["low"] < -0.1 and spread["high"] > 0.1  # training noise alone
    assert spread["verdict"] == "no difference"
    steady = rows.loc[("icfl_none", "topk_pca")]
    assert steady["low"] == pytest.approx(-0.3) and steady["high"] == pytest.approx(-0.3)
    assert steady["verdict"] == "topk_pca higher"
    # seed sd of the variant, and the mean-over-labels row equals the only label
    icfl = intervals[(intervals.method == "icfl") & (intervals.whitening == "pca")]
    icfl = icfl[icfl.score == "insample_avg"].set_index("label")
    assert icfl.loc["a", "seed_sd"] == pytest.approx(0.4)
    assert icfl.loc[MEAN_LABEL, "value"] == pytest.approx(0.5)


def test_one_variant_gives_tables_with_their_columns_and_no_rows():
    """A dataset with one method and one whitening has no pair: its difference, verdict and
    claim tables are written with their header, so reading them back works."""
    _, differences = comparison_tables(
        samples({("icfl", "pca", 8): [0.4, 0.5]}), level=0.95, seed=0
    )
    assert differences.empty and {"first", "second", "verdict"} <= set(differences.columns)
    verdicts = verdict_counts(differences)
    assert verdicts.empty and {"mean_difference", "labels_no_difference"} <= set(verdicts.columns)
    claim = claim_table(verdicts, {})
    assert claim.empty and {"metric", "labels_above_null_first"} <= set(claim.columns)
    assert pd.read_csv(io.StringIO(claim.to_csv(index=False))).columns.tolist() == list(
        claim.columns
    )


def test_every_pair_of_equal_sparsity_is_compared():
    found = samples(
        {
            ("icfl", "pca", 8): [0.4],
            ("icfl", "none", 8): [0.3],
            ("topk", "pca", 8): [0.2],
            ("topk", "none", 8): [0.1],
            ("topk", "none", 16): [0.1],
            ("icfl", "pca", 16): [0.1],
        }
    )
    _, differences = comparison_tables(found, level=0.95, seed=0)
    pairs = differences[differences.score == "heldout_ap"].drop_duplicates(
        ["sparsity", "first", "second"]
    )
    by_sparsity = pairs.groupby("sparsity").apply(
        lambda g: sorted(zip(g["first"], g["second"], strict=True)), include_groups=False
    )
    assert by_sparsity[8] == sorted(
        [
            ("icfl_pca", "icfl_none"),
            ("icfl_pca", "topk_pca"),
            ("icfl_pca", "topk_none"),
            ("icfl_none", "topk_pca"),
            ("icfl_none", "topk_none"),
            ("topk_pca", "topk_none"),
        ]
    )
    assert by_sparsity[16] == [("icfl_pca", "topk_none")]


def test_verdict_counts_per_pair():
    differences = pd.DataFrame(
        {
            "task": "t",
            "score": "heldout_avg",
            "sparsity": 8,
            "first": "icfl_pca",
            "second": "topk_pca",
            "label": ["a", "b", "c", MEAN_LABEL],
            "difference": [0.2, -0.1, 0.0, 0.03],
            "low": [0.1, -0.2, -0.1, -0.01],
            "high": [0.3, -0.05, 0.1, 0.07],
            "verdict": ["icfl_pca higher", "topk_pca higher", "no difference", "no difference"],
        }
    )
    row = verdict_counts(differences).iloc[0]
    assert row["mean_difference"] == 0.03 and row["verdict"] == "no difference"
    assert (row["labels_first_higher"], row["labels_second_higher"]) == (1, 1)
    assert row["labels_no_difference"] == 1 and row["n_labels"] == 3


def test_the_same_unit_draws_serve_every_model():
    # two variants with identical codes and choices: every replicate's difference is exactly
    # 0, which holds only if both models are scored on the same unit draws
    codes, design = toy(4)
    settings = SignificanceSettings(permutations=9, seed=0, fdr=0.05, matched_frequency=2.0)
    table = task_scores(codes, design, settings).table
    chosen, points = chosen_and_points(table, "t", design.classes)
    names = ["icfl_pca_k8_seed0", "topk_pca_k8_seed0"]
    found = variant_samples(
        dict.fromkeys(names, codes),
        dict.fromkeys(names, chosen),
        dict.fromkeys(names, points),
        design,
        np.arange(codes.shape[0]) // 3,  # units of three tokens
        replicates=50,
        seed=1,
    )
    _, differences = comparison_tables(found, level=0.95, seed=0)
    assert (differences.low == 0).all() and (differences.high == 0).all()
    assert (differences.verdict == "no difference").all()
    intervals, _ = comparison_tables(found, level=0.95, seed=0)
    assert (intervals.high > intervals.low).any()  # while each model's own interval is not 0


def test_claim_table_keeps_the_papers_pairs_and_counts_labels_above_null():
    verdicts = pd.DataFrame(
        [
            {"task": "t", "score": s, "sparsity": 8, "first": f, "second": g}
            | {"mean_difference": 0.1, "low": 0.0, "high": 0.2, "verdict": "no difference"}
            for s in ("insample_avg", "heldout_ap")
            for f, g in (
                ("icfl_pca", "topk_pca"),
                ("icfl_pca", "icfl_none"),
                ("icfl_pca", "topk_none"),
            )
        ]
    )

    def scores(above: list[bool]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "task": "t",
                "label": ["a", "b", "c", "a", "b", "c"],
                "score": ["insample_avg"] * 3 + ["heldout_ap"] * 3,
                "above_null": above + [False, False, False],
            }
        )

    claim = claim_table(
        verdicts,
        {
            "icfl_pca_k8_seed0": scores([True, True, False]),
            "icfl_pca_k8_seed1": scores([True, False, False]),
            "topk_pca_k8_seed0": scores([True, True, True]),
            "topk_none_k8_seed0": scores([False, False, False]),
            "icfl_none_k8_seed0": scores([True, True, True]),
        },
    )
    assert set(zip(claim["first"], claim["second"], strict=True)) == {
        ("icfl_pca", "topk_pca"),
        ("icfl_pca", "topk_none"),
    }
    rows = claim.set_index(["score", "second"])
    assert rows.loc[("insample_avg", "topk_pca"), "labels_above_null_first"] == 1.5  # 2, 1
    assert rows.loc[("insample_avg", "topk_pca"), "labels_above_null_second"] == 3
    assert rows.loc[("insample_avg", "topk_none"), "labels_above_null_second"] == 0
    assert rows.loc[("heldout_ap", "topk_pca"), "labels_above_null_first"] == 0
    assert (claim["n_labels_task"] == 3).all()
    assert rows.loc[("heldout_ap", "topk_pca"), "metric"].startswith("average precision")


def test_a_pairs_mean_over_labels_is_over_the_labels_both_score():
    # label b has no value for ICFL + PCA (e.g. no test token): the pair's mean difference is
    # over label a alone, 0.8 - 0.2, not the difference of each variant's own mean, 0.8 - 0.3
    values = {("icfl", "pca", 8): [0.8, np.nan], ("topk", "pca", 8): [0.2, 0.4]}
    point = {k: {s: np.array([v]) for s in SCORES} for k, v in values.items()}
    drawn = {k: {s: np.full((1, 50, 2), v) for s in SCORES} for k, v in values.items()}
    found = VariantSamples("t", np.array(["a", "b"]), point, drawn)
    intervals, differences = comparison_tables(found, level=0.95, seed=0)
    mean = differences[(differences.label == MEAN_LABEL) & (differences.score == "heldout_avg")]
    assert mean.difference.iloc[0] == pytest.approx(0.6)
    assert mean.low.iloc[0] == pytest.approx(0.6) and mean.high.iloc[0] == pytest.approx(0.6)
    own = intervals[(intervals.label == MEAN_LABEL) & (intervals.score == "heldout_avg")]
    assert own.set_index("method").value.to_dict() == pytest.approx({"icfl": 0.8, "topk": 0.3})


def test_task_comparisons_compare_the_variants_task_by_task():
    from cellconcepts.evaluate.label_scores import label_score_tables, task_design
    from cellconcepts.evaluate.probing import ProbeSettings
    from cellconcepts.evaluate.variant_comparison import task_comparisons

    codes, _ = toy(5, n=240)
    other, _ = toy(6, n=240)
    obs = pd.DataFrame(
        {
            "label": np.array(["a", "b", "c", "d"])[np.arange(240) % 4],
            "half": np.where(np.arange(240) % 2, "x", "y"),
        }
    )
    tasks = [{"name": "t", "column": "label"}, {"name": "u", "column": "half"}]
    probe = ProbeSettings(test_fraction=0.3)
    settings = SignificanceSettings(permutations=9, seed=0, fdr=0.05, matched_frequency=2.0)
    matrices = {"icfl_pca_k8_seed0": codes, "topk_pca_k8_seed0": other}
    scores = {
        name: label_score_tables(matrix, obs, tasks, probe, settings)[0]
        for name, matrix in matrices.items()
    }
    units = np.arange(240) // 4
    bootstrap = {"replicates": 30, "seed": 2, "level": 0.9}
    intervals, differences = task_comparisons(
        matrices, scores, obs, tasks, probe, units=units, split_units=None, bootstrap=bootstrap
    )
    expected = []
    for task in tasks:
        design = task_design(obs, task, probe)
        picked = {n: chosen_and_points(s, task["name"], design.classes) for n, s in scores.items()}
        found = variant_samples(
            matrices,
            {n: p[0] for n, p in picked.items()},
            {n: p[1] for n, p in picked.items()},
            design,
            units,
            replicates=30,
            seed=2,
        )
        expected.append(comparison_tables(found, level=0.9, seed=2))
    pd.testing.assert_frame_equal(intervals, pd.concat([e[0] for e in expected], ignore_index=True))
    pd.testing.assert_frame_equal(
        differences, pd.concat([e[1] for e in expected], ignore_index=True)
    )
    assert differences["task"].unique().tolist() == ["t", "u"]
    assert set(zip(differences["first"], differences["second"], strict=True)) == {
        ("icfl_pca", "topk_pca")
    }


def verdict_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": "t",
            "score": "insample_avg",
            "sparsity": 8,
            "first": "icfl_pca",
            "second": "topk_pca",
            "label": ["a", "b", MEAN_LABEL],
            "difference": [0.2, 0.05, 0.125],
            "low": [0.1, -0.1, 0.02],
            "high": [0.3, 0.2, 0.2],
            "verdict": ["icfl_pca higher", "no difference", "icfl_pca higher"],
        }
    )


def test_comparison_report_names_its_tables_and_says_the_level():
    from cellconcepts.evaluate.variant_comparison import comparison_report

    differences = verdict_table()
    intervals = pd.DataFrame({"label": ["a"], "value": [0.5]})
    scores = {
        name: pd.DataFrame(
            {"task": "t", "label": ["a", "b"], "score": "insample_avg", "above_null": above}
        )
        for name, above in (
            ("icfl_pca_k8_seed0", [True, True]),
            ("topk_pca_k8_seed0", [True, False]),
        )
    }
    report = comparison_report(intervals, differences, scores, 0.95)
    assert list(report) == ["intervals", "differences", "verdicts", "claim"]
    assert report["intervals"][0] is intervals and report["differences"][0] is differences
    assert report["intervals"][1] == (
        "best-feature scores per variant (mean over seeds) with 95 % intervals over units and seeds"
    )
    assert report["differences"][1] == (
        "paired differences between variants with 95 % intervals over units and seeds"
    )
    assert report["verdicts"][1] == "verdicts per pair of variants"
    pd.testing.assert_frame_equal(report["verdicts"][0], verdict_counts(differences))
    claim = report["claim"][0]
    assert claim[["labels_above_null_first", "labels_above_null_second"]].values.tolist() == [
        [2, 1]
    ]
    assert report["claim"][1] == "ICFL + PCA against TopK under each metric, over units and seeds"


def test_verdict_lines_say_each_pairs_difference_and_label_counts():
    from cellconcepts.evaluate.variant_comparison import verdict_lines

    assert verdict_lines(verdict_counts(verdict_table())) == [
        "t, insample_avg, k8: icfl_pca - topk_pca = 0.125 [0.020, 0.200], icfl_pca higher; "
        "labels: 1 / 0 higher, 1 no difference"
    ]
