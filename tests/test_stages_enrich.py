"""GO enrichment (cellconcepts.stages.enrich and the enrich domain modules) on small hand-built
inputs.

Expectations are worked out by hand from the inputs (ranks, FDRs, overlaps are written into the
tables), or computed independently (exact hypergeometric tails with ``math.comb``).
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellconcepts.enrich import gene_lists as feature_genes
from cellconcepts.enrich import genesets
from cellconcepts.enrich import statistics as enrich
from cellconcepts.enrich.annotation import annotate_features
from cellconcepts.enrich.gene_lists import aligned_expression, screen_controls
from cellconcepts.enrich.gseapy_check import (
    GSEAPY_CHECK_COLUMNS,
    _max_relative_difference,
    gseapy_check,
)
from cellconcepts.enrich.recovery import planted_term_outcome
from cellconcepts.stages.enrich import enrichment_labels, go_recovery

FDR = 0.05

# --------------------------------------------------------------------------- helpers


def _hits(rows: list[tuple[str, int, float, int, int]]) -> pd.DataFrame:
    """One gene list's terms: (term, rank, fdr, overlap, term_group)."""
    return pd.DataFrame(rows, columns=["term", "rank", "fdr", "overlap", "term_group"])


def _enrichment(rows: list[dict]) -> pd.DataFrame:
    """An enrichment table as enrich_model writes it: feature, direction, ENRICHMENT_COLUMNS.

    Each row gives feature, direction, list, term, p_value, fdr, rank and optionally overlap,
    list_size, term_size, term_group, genes; the rest are filled in."""
    defaults = {
        "overlap": 1,
        "list_size": 5,
        "term_size": 10,
        "term_group": 0,
        "background_size": 100,
        "genes": "",
    }
    table = pd.DataFrame([{**defaults, **row} for row in rows])
    table["fold_enrichment"] = table["overlap"] / (
        table["list_size"] * table["term_size"] / table["background_size"]
    )
    table = table.astype({"feature": np.int64, "list": np.int64, "rank": np.int64})
    return table[["feature", "direction", *enrich.ENRICHMENT_COLUMNS]]


def _best(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    """A best_selectivity.csv: (task, label, best_feature, best_avg) per row."""
    return pd.DataFrame(
        [
            {
                "task": task,
                "label": label,
                "n_tokens": 10,
                "best_avg": avg,
                "best_feature": feature,
                "best_max": min(1.0, avg + 0.1),
            }
            for task, label, feature, avg in rows
        ],
        columns=["task", "label", "n_tokens", "best_avg", "best_feature", "best_max"],
    )


def _write_inputs(
    tmp_path: Path, best: dict[str, pd.DataFrame], enrichment: dict[str, pd.DataFrame]
) -> tuple[dict[str, Path], dict[str, Path]]:
    best_paths, enrichment_paths = {}, {}
    for variant, table in best.items():
        best_paths[variant] = tmp_path / f"{variant}_best_selectivity.csv"
        table.to_csv(best_paths[variant], index=False)
    for variant, table in enrichment.items():
        enrichment_paths[variant] = tmp_path / f"{variant}_enrichment.parquet"
        table.to_parquet(enrichment_paths[variant], index=False)
    return best_paths, enrichment_paths


def _exact_tail(k: int, big_k: int, n: int, m: int) -> float:
    """P(X >= k), X ~ hypergeometric: n draws from m genes of which big_k are in the term."""
    total = sum(
        (math.comb(big_k, x) * math.comb(m - big_k, n - x) for x in range(k, min(big_k, n) + 1)),
        start=0,
    )
    return float(Fraction(total, math.comb(m, n)))


# --------------------------------------------------------------------------- planted_term_outcome


def test_planted_term_unique_at_the_top_and_significant_is_recovered() -> None:
    hits = _hits([("T_plant", 1, 0.001, 3, 0), ("T_other", 2, 0.2, 1, 1)])
    assert planted_term_outcome(hits, "T_plant", FDR) == {
        "planted_rank": 1,
        "planted_fdr": 0.001,
        "planted_overlap": 3,
        "n_tied_at_top": 1,
        "unique_top": True,
        "ties_identical": True,
        "recovered": True,
        "recovered_strict": True,
    }


def test_planted_term_tied_with_an_identical_term_is_recovered_but_not_strictly() -> None:
    hits = _hits([("T_twin", 1, 0.01, 2, 4), ("T_plant", 1, 0.01, 2, 4), ("T_other", 3, 0.3, 1, 0)])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert out["planted_rank"] == 1
    assert out["n_tied_at_top"] == 2
    assert out["unique_top"] is False
    assert out["ties_identical"] is True
    assert out["recovered"] is True
    assert out["recovered_strict"] is False


@pytest.mark.parametrize(
    "others",
    [
        [("T_other", 1, 0.01, 2, 7)],  # tied with a different term
        [("T_twin", 1, 0.01, 2, 4), ("T_other", 1, 0.01, 2, 7)],  # one identical, one not
    ],
)
def test_planted_term_tied_with_a_different_term_is_not_recovered(others: list) -> None:
    hits = _hits([("T_plant", 1, 0.01, 2, 4), *others])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert out["planted_rank"] == 1
    assert out["n_tied_at_top"] == 1 + len(others)
    assert out["unique_top"] is False
    assert out["ties_identical"] is False
    assert out["recovered"] is False
    assert out["recovered_strict"] is False


@pytest.mark.parametrize("fdr", [0.05, 0.2])
def test_planted_term_at_the_top_but_not_significant_is_not_recovered(fdr: float) -> None:
    hits = _hits([("T_plant", 1, fdr, 3, 0), ("T_other", 2, 0.5, 1, 1)])
    out = planted_term_outcome(hits, "T_plant", FDR)  # FDR < 0.05 is strict
    assert out["planted_fdr"] == fdr
    assert out["unique_top"] is True
    assert out["ties_identical"] is True
    assert out["recovered"] is False
    assert out["recovered_strict"] is False


def test_planted_term_second_is_not_recovered() -> None:
    hits = _hits([("T_a", 1, 0.001, 4, 1), ("T_b", 1, 0.001, 4, 2), ("T_plant", 3, 0.01, 2, 0)])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert out == {
        "planted_rank": 3,
        "planted_fdr": 0.01,
        "planted_overlap": 2,
        "n_tied_at_top": 2,
        "unique_top": False,
        "ties_identical": False,
        "recovered": False,
        "recovered_strict": False,
    }
    hits = _hits([("T_a", 1, 0.001, 4, 1), ("T_plant", 2, 0.01, 2, 0)])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert out["planted_rank"] == 2
    assert (out["recovered"], out["recovered_strict"], out["unique_top"]) == (False,) * 3


def test_planted_term_absent() -> None:
    hits = _hits([("T_a", 1, 0.001, 4, 1), ("T_b", 1, 0.001, 4, 2), ("T_c", 3, 0.5, 1, 3)])
    out = planted_term_outcome(hits, "T_plant", FDR)
    assert np.isnan(out["planted_rank"])
    assert np.isnan(out["planted_fdr"])
    assert out["planted_overlap"] == 0
    assert out["n_tied_at_top"] == 2
    assert not any(out[k] for k in ["unique_top", "ties_identical", "recovered"])
    assert out["recovered_strict"] is False

    empty = planted_term_outcome(_hits([]), "T_plant", FDR)
    assert empty["n_tied_at_top"] == 0
    assert empty["recovered"] is False


# --------------------------------------------------------------------------- go_recovery_table

GROUPS = pd.DataFrame(
    {
        "gene_group": ["alpha", "beta"],
        "go_term": ["T_alpha", "T_beta"],
        "channel": ["DNA", "RNA"],
        "genes": ["A1;A2;A3;A4", "B1;B2;B3;B4;B5"],
        "n_genes": [4, 5],
    }
)

# v1 (microscopy: one "selective" list per feature)
#   feature 0 -> alpha: T_alpha unique top, FDR 0.001, 3 of 5 genes -> recovered (strictly)
#   feature 1 -> beta: T_beta tied at the top with an identical term -> recovered, not strictly
#   feature 2 (best for the control label, not a group): T_alpha second
#   feature 3 (best for alpha on another task): T_alpha unique top
#   chance of T_alpha: features 0 and 3 of 0-3 = 0.5; of T_beta: feature 1 = 0.25
V1_ENRICHMENT = _enrichment(
    [
        dict(feature=0, direction="selective", list=0, term="T_alpha", p_value=1e-5, fdr=0.001,
             rank=1, overlap=3, list_size=5, term_group=0, genes="A1;A2;A3"),
        dict(feature=0, direction="selective", list=0, term="T_x", p_value=0.1, fdr=0.3, rank=2,
             overlap=1, list_size=5, term_group=5),
        dict(feature=1, direction="selective", list=1, term="T_beta", p_value=1e-3, fdr=0.01,
             rank=1, overlap=2, list_size=4, term_group=1),
        dict(feature=1, direction="selective", list=1, term="T_beta_twin", p_value=1e-3,
             fdr=0.01, rank=1, overlap=2, list_size=4, term_group=1),
        dict(feature=2, direction="selective", list=2, term="T_y", p_value=1e-4, fdr=0.01,
             rank=1, overlap=2, list_size=3, term_group=6),
        dict(feature=2, direction="selective", list=2, term="T_alpha", p_value=1e-3, fdr=0.04,
             rank=2, overlap=2, list_size=3, term_group=0),
        dict(feature=3, direction="selective", list=3, term="T_alpha", p_value=1e-4, fdr=0.02,
             rank=1, overlap=2, list_size=2, term_group=0),
    ]
)  # fmt: skip
V1_BEST = _best(
    [
        ("group", "alpha", 0, 0.8),
        ("group", "control", 2, 0.7),
        ("group", "beta", 1, 0.6),
        ("gene", "alpha", 3, 0.9),
    ]
)

# v2 (scRNA-like: up and down lists; down lists never count)
#   feature 5 -> alpha: up list has T_alpha second (the down list has it on top)
#   feature 6 -> beta: T_beta on top of the up list but FDR 0.2
#   feature 7: only a down list (T_beta on top): not a feature with a list for chance
#   feature 8: up list with T_alpha on top
#   chance of T_alpha: feature 8 of 5, 6, 8 = 1/3; of T_beta: 0
V2_ENRICHMENT = _enrichment(
    [
        dict(feature=5, direction="up", list=0, term="T_other", p_value=1e-6, fdr=0.001,
             rank=1, overlap=6, list_size=10, term_group=2),
        dict(feature=5, direction="up", list=0, term="T_alpha", p_value=1e-4, fdr=0.01, rank=2,
             overlap=4, list_size=10, term_group=0),
        dict(feature=5, direction="down", list=1, term="T_alpha", p_value=1e-8, fdr=1e-5,
             rank=1, overlap=4, list_size=6, term_group=0),
        dict(feature=6, direction="up", list=2, term="T_beta", p_value=0.01, fdr=0.2, rank=1,
             overlap=3, list_size=8, term_group=1),
        dict(feature=7, direction="down", list=3, term="T_beta", p_value=1e-6, fdr=0.001,
             rank=1, overlap=5, list_size=5, term_group=1),
        dict(feature=8, direction="up", list=4, term="T_alpha", p_value=1e-6, fdr=0.001,
             rank=1, overlap=4, list_size=4, term_group=0),
    ]
)  # fmt: skip
V2_BEST = _best([("group", "beta", 6, 0.4), ("group", "alpha", 5, 0.5)])


def _run_go_recovery(tmp_path: Path, best: dict[str, pd.DataFrame]) -> tuple[Path, Path]:
    groups_path = tmp_path / "groups.csv"
    GROUPS.to_csv(groups_path, index=False)
    best_paths, enrichment_paths = _write_inputs(
        tmp_path, best, {"v1": V1_ENRICHMENT, "v2": V2_ENRICHMENT}
    )
    table_path, summary_path = tmp_path / "go_recovery.csv", tmp_path / "go_recovery_summary.csv"
    go_recovery(
        best_selectivity=list(best_paths.values()),
        enrichment=[enrichment_paths[v] for v in best_paths],
        groups=groups_path,
        table=[table_path.with_suffix(ext) for ext in (".csv", ".md", ".tex")],
        summary=[summary_path.with_suffix(ext) for ext in (".csv", ".md", ".tex")],
        variants=list(best_paths),
        group_task="group",
        fdr=FDR,
    )
    return table_path, summary_path


def test_go_recovery_table(tmp_path: Path) -> None:
    table_path, summary_path = _run_go_recovery(tmp_path, {"v1": V1_BEST, "v2": V2_BEST})
    for path in (table_path, summary_path):
        assert path.with_suffix(".md").is_file()
        assert path.with_suffix(".tex").is_file()
        assert path.with_suffix(".md").read_text().strip()
        assert "caption" in path.with_suffix(".tex").read_text()

    table = pd.read_csv(table_path)
    expected = pd.DataFrame(
        [
            # variant, group, term, feature, avg, list_size, rank, fdr, overlap, n_tied,
            # unique, identical, recovered, strict, precision, recall, top_term, chance
            ("v1", "alpha", "T_alpha", 0, 0.8, 5, 1, 0.001, 3, 1,
             True, True, True, True, 3 / 5, 3 / 4, "T_alpha", 0.5),
            ("v1", "beta", "T_beta", 1, 0.6, 4, 1, 0.01, 2, 2,
             False, True, True, False, 2 / 4, 2 / 5, "T_beta", 0.25),
            ("v2", "alpha", "T_alpha", 5, 0.5, 10, 2, 0.01, 4, 1,
             False, False, False, False, 4 / 10, 4 / 4, "T_other", 1 / 3),
            ("v2", "beta", "T_beta", 6, 0.4, 8, 1, 0.2, 3, 1,
             True, True, False, False, 3 / 8, 3 / 5, "T_beta", 0.0),
        ],
        columns=[
            "variant", "group", "planted_term", "feature", "avg_selectivity", "list_size",
            "planted_rank", "planted_fdr", "planted_overlap", "n_tied_at_top", "unique_top",
            "ties_identical", "recovered", "recovered_strict", "precision", "recall", "top_term",
            "random_feature_rate",
        ],
    )  # fmt: skip
    assert list(table.columns) == list(expected.columns)
    assert len(table) == 4  # one row per variant x group; the control label is left out
    got = table.sort_values(["variant", "group"], ignore_index=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-12, atol=0)

    summary = pd.read_csv(summary_path)
    assert list(summary.columns) == [
        "variant",
        "groups",
        "recovered",
        "fraction",
        "recovered_strict",
        "fraction_strict",
        "mean_precision",
        "chance",
    ]
    expected_summary = pd.DataFrame(
        {
            "variant": ["v1", "v2"],
            "groups": [2, 2],
            "recovered": [2, 0],
            "fraction": [1.0, 0.0],
            "recovered_strict": [1, 0],
            "fraction_strict": [0.5, 0.0],
            "mean_precision": [(3 / 5 + 2 / 4) / 2, (4 / 10 + 3 / 8) / 2],
            "chance": [(0.5 + 0.25) / 2, (1 / 3 + 0.0) / 2],
        }
    )
    pd.testing.assert_frame_equal(summary, expected_summary, check_dtype=False, rtol=1e-12)


def test_go_recovery_table_feature_without_terms(tmp_path: Path) -> None:
    # beta's best feature (9) has no enrichment rows at all: not recovered, no precision
    best = _best([("group", "alpha", 0, 0.8), ("group", "beta", 9, 0.3)])
    table_path, summary_path = _run_go_recovery(tmp_path, {"v1": best})
    row = pd.read_csv(table_path).set_index("group").loc["beta"]
    assert row["feature"] == 9
    assert row["list_size"] == 0
    assert np.isnan(row["planted_rank"])
    assert row["planted_overlap"] == 0
    assert not row["recovered"]
    assert np.isnan(row["precision"])
    assert row["recall"] == 0.0
    assert pd.isna(row["top_term"])
    assert row["random_feature_rate"] == 0.25
    summary = pd.read_csv(summary_path)
    assert summary.loc[0, "fraction"] == 0.5
    assert summary.loc[0, "mean_precision"] == 3 / 5  # NaN left out of the mean


def test_go_recovery_table_missing_group_label_raises(tmp_path: Path) -> None:
    best = _best([("group", "alpha", 0, 0.8), ("gene", "beta", 1, 0.6)])  # beta on another task
    with pytest.raises(ValueError, match=r"\['beta'\] are not labels of task 'group'"):
        _run_go_recovery(tmp_path, {"v1": V1_BEST, "v2": best})


def test_go_recovery_table_missing_task_raises(tmp_path: Path) -> None:
    best = _best([("gene", "alpha", 0, 0.8), ("gene", "beta", 1, 0.6)])
    with pytest.raises(ValueError, match="no rows for task 'group'"):
        _run_go_recovery(tmp_path, {"v1": best})


# --------------------------------------------------------------------------- label_terms_table

# feature 0: up list T1 (p 1e-5), T2 and T3 tied in p (T3 smaller: first), T4; a down list with
# a smaller p that must not show; feature 1: one term; feature 2: only a down list.
LABEL_ENRICHMENT = _enrichment(
    [
        dict(feature=0, direction="up", list=0, term="T1", p_value=1e-5, fdr=1.5e-4, rank=1,
             overlap=3, list_size=7),
        dict(feature=0, direction="up", list=0, term="T2", p_value=1e-3, fdr=0.04, rank=2,
             overlap=2, list_size=7, term_size=20),
        dict(feature=0, direction="up", list=0, term="T3", p_value=1e-3, fdr=0.04, rank=2,
             overlap=2, list_size=7, term_size=12),
        dict(feature=0, direction="up", list=0, term="T4", p_value=0.3, fdr=0.6, rank=4,
             overlap=1, list_size=7),
        dict(feature=0, direction="down", list=1, term="T_down", p_value=1e-9, fdr=1e-8, rank=1,
             overlap=4, list_size=4),
        dict(feature=1, direction="up", list=2, term="T5", p_value=0.02, fdr=0.25, rank=1,
             overlap=1, list_size=2),
        dict(feature=2, direction="down", list=3, term="T6", p_value=1e-4, fdr=1e-3, rank=1,
             overlap=2, list_size=2),
    ]
)  # fmt: skip
LABEL_BEST = _best(
    [
        ("cell_type", "B", 0, 0.9),
        ("cell_type", "NK", 2, 0.5),
        ("cell_type", "T", 1, 0.7),
        ("other", "B", 1, 0.95),
    ]
)


def _run_label_terms(tmp_path: Path, labels: list[str] | None, top_terms: int) -> pd.DataFrame:
    best_paths, enrichment_paths = _write_inputs(
        tmp_path, {"m": LABEL_BEST}, {"m": LABEL_ENRICHMENT}
    )
    table_path = tmp_path / "label_terms.csv"
    enrichment_labels(
        best_selectivity=[best_paths["m"]],
        enrichment=[enrichment_paths["m"]],
        table=[table_path.with_suffix(ext) for ext in (".csv", ".md", ".tex")],
        variants=["m"],
        label_task="cell_type",
        labels=labels,
        top_terms=top_terms,
    )
    assert table_path.with_suffix(".md").is_file()
    assert table_path.with_suffix(".tex").is_file()
    return pd.read_csv(table_path, keep_default_na=False, na_values=[""])


def test_label_terms_table_lists_the_top_terms(tmp_path: Path) -> None:
    table = _run_label_terms(tmp_path, ["T", "B"], top_terms=3)
    assert list(table.columns) == [
        "variant",
        "label",
        "feature",
        "avg_selectivity",
        "top_term",
        "top_fdr",
        "top_terms",
    ]
    assert list(table["label"]) == ["B", "T"]  # file order (best first), not the config's
    b, t = table.iloc[0], table.iloc[1]
    assert (b["variant"], b["feature"], b["avg_selectivity"]) == ("m", 0, 0.9)
    assert b["top_term"] == "T1"
    assert b["top_fdr"] == 1.5e-4
    assert b["top_terms"] == (
        "T1 (FDR 0.00015, 3/7 genes) | T3 (FDR 0.04, 2/7 genes) | T2 (FDR 0.04, 2/7 genes)"
    )
    assert (t["feature"], t["top_term"], t["top_fdr"]) == (1, "T5", 0.25)
    assert t["top_terms"] == "T5 (FDR 0.25, 1/2 genes)"


def test_label_terms_table_all_labels_and_down_only_feature(tmp_path: Path) -> None:
    table = _run_label_terms(tmp_path, None, top_terms=1)
    assert list(table["label"]) == ["B", "NK", "T"]
    assert table.loc[0, "top_terms"] == "T1 (FDR 0.00015, 3/7 genes)"
    nk = table.iloc[1]
    assert nk["feature"] == 2
    assert pd.isna(nk["top_term"])  # only a down list: nothing to report
    assert np.isnan(nk["top_fdr"])
    assert pd.isna(nk["top_terms"])  # "" in the CSV
    assert "T_down" not in " ".join(table["top_terms"].fillna(""))
    assert "T6" not in " ".join(table["top_terms"].fillna(""))


def test_label_terms_table_unknown_labels_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['Mono', 'Zeta'\] are not labels of task 'cell_type'"):
        _run_label_terms(tmp_path, ["B", "Zeta", "Mono"], top_terms=2)


# --------------------------------------------------------------------------- annotate_features


def _gene_lists() -> feature_genes.GeneLists:
    """Feature 0: up and down lists; feature 1: an up list; feature 2: no list."""
    genes = np.array(["A", "B", "C", "D", "E"], dtype=object)
    listed = pd.DataFrame(
        {
            "feature": [0, 0, 0, 1, 1],
            "direction": ["up", "up", "down", "up", "up"],
            "gene": ["A", "B", "C", "D", "E"],
        }
    )
    index = pd.DataFrame({"feature": [0, 0, 1], "direction": ["up", "down", "up"]})
    lists = sp.csr_matrix((np.ones(5), ([0, 0, 1, 2, 2], [0, 1, 2, 3, 4])), shape=(3, genes.size))
    features = pd.DataFrame(
        {
            "feature": [0, 1, 2],
            "n_active": [30, 20, 3],
            "status": [feature_genes.OK, feature_genes.ALL_ACTIVE_CELLS, feature_genes.NO_DE_GENES],
        }
    )
    return feature_genes.GeneLists(
        genes=genes, lists=lists, index=index, genes_table=listed, features=features
    )


ANNOTATE_ENRICHMENT = _enrichment(
    [
        # feature 0: the up list's best p has FDR 0.2; the down list's term has a larger p but
        # FDR 0.01 (a smaller family of small p-values): FDR decides
        dict(feature=0, direction="up", list=0, term="T_up", p_value=1e-4, fdr=0.2, rank=1,
             overlap=2, list_size=2, genes="A;B"),
        dict(feature=0, direction="up", list=0, term="T_up2", p_value=1e-3, fdr=0.3, rank=2,
             overlap=1, list_size=2, genes="A"),
        dict(feature=0, direction="down", list=1, term="T_down", p_value=5e-4, fdr=0.01,
             rank=1, overlap=1, list_size=1, genes="C"),
        # feature 1: same FDR, the smaller p wins; then term size
        dict(feature=1, direction="up", list=2, term="T_b", p_value=0.02, fdr=0.04, rank=2,
             overlap=1, list_size=2, term_size=3, genes="D"),
        dict(feature=1, direction="up", list=2, term="T_a", p_value=0.01, fdr=0.04, rank=1,
             overlap=2, list_size=2, term_size=30, genes="D;E"),
        dict(feature=1, direction="up", list=2, term="T_c", p_value=0.02, fdr=0.04, rank=2,
             overlap=1, list_size=2, term_size=2, genes="E"),
    ]
)  # fmt: skip


def test_annotate_features_best_term_by_fdr_first() -> None:
    gene_lists = _gene_lists()
    labels = pd.Series(["t=a (0.50)", "", "t=b (0.40)"], name="selective_labels")
    table = annotate_features(gene_lists, ANNOTATE_ENRICHMENT, labels, FDR)

    assert list(table.columns) == [
        "feature",
        "selective_labels",
        "n_active",
        "status",
        "best_direction",
        "best_term",
        "best_fdr",
        "best_overlap",
        "list_size",
        "best_genes",
        "n_significant_terms",
    ]
    assert list(table["feature"]) == [0, 1, 2]
    assert list(table["selective_labels"]) == ["t=a (0.50)", "", "t=b (0.40)"]
    assert list(table["status"]) == ["ok", "all_active_cells", "no_de_genes"]

    f0, f1, f2 = (table.iloc[i] for i in range(3))
    assert (f0["best_direction"], f0["best_term"], f0["best_fdr"]) == ("down", "T_down", 0.01)
    assert (f0["best_overlap"], f0["list_size"], f0["best_genes"]) == (1, 1, "C")
    assert (f1["best_direction"], f1["best_term"], f1["best_fdr"]) == ("up", "T_a", 0.04)
    assert (f1["best_overlap"], f1["list_size"], f1["best_genes"]) == (2, 2, "D;E")
    assert pd.isna(f2["best_term"])
    assert pd.isna(f2["best_direction"])
    assert np.isnan(f2["best_fdr"])
    # terms with FDR < 0.05: feature 0 -> T_down; feature 1 -> all three; feature 2 -> none
    assert list(table["n_significant_terms"]) == [1, 3, 0]
    for threshold, expected in [(0.25, [2, 3, 0]), (0.04, [1, 0, 0])]:
        other = annotate_features(gene_lists, ANNOTATE_ENRICHMENT, labels, threshold)
        assert list(other["n_significant_terms"]) == expected
    assert "selective_labels" not in gene_lists.features.columns  # the input is not modified


def test_annotate_features_same_p_breaks_ties_by_term_size() -> None:
    enrichment = ANNOTATE_ENRICHMENT[ANNOTATE_ENRICHMENT["term"] != "T_a"]
    table = annotate_features(_gene_lists(), enrichment, pd.Series(["", "", ""]), FDR)
    assert table.loc[1, "best_term"] == "T_c"  # same FDR and p as T_b, fewer genes


def test_annotate_features_without_any_enrichment() -> None:
    empty = ANNOTATE_ENRICHMENT.iloc[:0]
    table = annotate_features(_gene_lists(), empty, pd.Series(["", "", ""]), FDR)
    assert table["best_term"].isna().all()
    assert list(table["n_significant_terms"]) == [0, 0, 0]


def test_annotate_features_on_selective_gene_lists() -> None:
    # 6 cells, screened genes G1..G3 and control NTC; feature 0 is active on G1 cells only,
    # feature 1 on nothing
    codes = sp.csr_matrix(
        np.array([[1.0, 0], [1.0, 0], [0, 0], [0, 0], [0, 0], [0, 0]], dtype=np.float64)
    )
    labels = pd.Series(["G1", "G1", "G2", "G2", "G3", "NTC"])
    lists = feature_genes.selective_gene_lists(
        codes, labels, controls=["NTC"], min_selectivity=0.2, top_n=1
    )
    assert list(lists.genes) == ["G1", "G2", "G3"]
    assert list(lists.index["feature"]) == [0]
    enrichment = _enrichment(
        [dict(feature=0, direction="selective", list=0, term="T", p_value=0.01, fdr=0.01, rank=1)]
    )
    table = annotate_features(lists, enrichment, pd.Series(["x", ""]), FDR)
    assert list(table["best_term"].fillna("-")) == ["T", "-"]
    assert list(table["status"]) == [feature_genes.OK, feature_genes.NO_SELECTIVE_GENES]
    assert list(table["n_significant_terms"]) == [1, 0]


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
    assert screen_controls(dataset["control"], screen_obs, "gene") == [
        "NTC",
        "ONLYCTRL",
        "Scrambled",
    ]


def test_screen_controls_without_config(screen_obs: pd.DataFrame) -> None:
    assert screen_controls(None, screen_obs, "gene") == ["NTC", "ONLYCTRL"]
    assert screen_controls(None, screen_obs, "gene") == ["NTC", "ONLYCTRL"]


def test_screen_controls_config_on_another_column_is_ignored(screen_obs: pd.DataFrame) -> None:
    dataset = {"control": {"column": "perturbation", "values": ["GENE1", "p1"]}}
    assert screen_controls(dataset["control"], screen_obs, "gene") == ["NTC", "ONLYCTRL"]
    # on the perturbation column: the configured values, and p0, p4, p5 (control rows only)
    assert screen_controls(dataset["control"], screen_obs, "perturbation") == [
        "GENE1",
        "p0",
        "p1",
        "p4",
        "p5",
    ]


def test_screen_controls_mixed_values_are_screened(screen_obs: pd.DataFrame) -> None:
    out = screen_controls(None, screen_obs, "gene")
    assert "MIXED" not in out
    assert "GENE1" not in out
    assert not any(v in out for v in ["None", "nan", "<NA>"])  # missing genes are no value


# --------------------------------------------------------------------------- aligned_expression

CELLS = ["c0", "c1", "c2", "c3"]
X = np.array([[0.0, 1.0, 2.0], [0.5, 0.0, 1.5], [3.0, 2.5, 0.0], [1.0, 1.0, 1.0]], dtype=np.float32)
RAW = np.array(
    [[0, 1, 0, 2], [4, 0, 0, 1], [0, 0, 3, 0], [1, 2, 3, 4]], dtype=np.float32
)  # log1p values too, 4 genes


def _write_h5ad(
    path: Path,
    *,
    cells: list[str] = CELLS,
    genes: tuple[str, ...] = ("cd3e", "Ms4a1", " Gnly "),
    raw: bool = True,
) -> str:
    anndata = pytest.importorskip("anndata")
    adata = anndata.AnnData(
        X=X.copy(), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=list(genes))
    )
    adata.layers["lognorm"] = sp.csr_matrix(X * 2)
    adata.layers["scaled"] = X - X.mean(axis=0)
    if raw:
        adata.raw = anndata.AnnData(
            X=sp.csr_matrix(RAW),
            obs=pd.DataFrame(index=cells),
            var=pd.DataFrame(index=["Cd3e", "ms4a1", "GNLY", "Nkg7"]),
        )
    adata.write_h5ad(path)
    return str(path)


def _obs(names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"token_id": np.arange(len(names)), "obs_name": names})


ORDER = ["c2", "c0", "c3"]


def test_aligned_expression_reorders_cells_and_upper_cases_genes(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")

    values, symbols = aligned_expression(source, "X", _obs(ORDER))
    assert isinstance(values, np.ndarray)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, X[[2, 0, 3]])
    assert list(symbols) == ["CD3E", "MS4A1", "GNLY"]

    values, symbols = aligned_expression(source, "raw", _obs(ORDER))
    assert sp.issparse(values)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values.toarray(), RAW[[2, 0, 3]])
    assert list(symbols) == ["CD3E", "MS4A1", "GNLY", "NKG7"]

    values, _ = aligned_expression(source, "layer:lognorm", _obs(["c1", "c1", "c0"]))
    assert sp.issparse(values)
    np.testing.assert_array_equal(values.toarray(), 2 * X[[1, 1, 0]])


def test_aligned_expression_refuses_scaled_data(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")
    with pytest.raises(ValueError, match="log1p"):
        aligned_expression(source, "layer:scaled", _obs(ORDER))


def test_aligned_expression_warns_on_counts(tmp_path: Path, caplog) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")
    anndata = pytest.importorskip("anndata")
    adata = anndata.read_h5ad(source)
    adata.layers["counts"] = X * 100
    adata.write_h5ad(source)
    with caplog.at_level(logging.WARNING, logger="cellconcepts.enrich.gene_lists"):
        aligned_expression(source, "layer:counts", _obs(ORDER))
    assert "not counts" in caplog.text


def test_aligned_expression_raw_missing_raises(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad", raw=False)
    with pytest.raises(ValueError, match="'raw'.*no .raw"):
        aligned_expression(source, "raw", _obs(ORDER))


def test_aligned_expression_unknown_layer_raises(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")
    with pytest.raises(ValueError, match="no layer 'nope'"):
        aligned_expression(source, "layer:nope", _obs(ORDER))


def test_aligned_expression_missing_cell_is_named(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad")
    with pytest.raises(ValueError, match=r"1 cells .* not in the expression data.*'c9'"):
        aligned_expression(source, "X", _obs(["c0", "c9", "c1"]))
    with pytest.raises(ValueError, match="obs_name"):
        aligned_expression(source, "X", pd.DataFrame({"token_id": [0]}))


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_aligned_expression_repeated_cell_names_raise(tmp_path: Path) -> None:
    with pytest.warns(UserWarning):  # anndata: obs names not unique
        source = _write_h5ad(tmp_path / "data.h5ad", cells=["c0", "c1", "c1", "c3"], raw=False)
    with pytest.raises(ValueError, match=r"repeated cell names.*'c1'"):
        aligned_expression(source, "X", _obs(["c0"]))


def test_aligned_expression_genes_repeating_once_upper_cased_raise(tmp_path: Path) -> None:
    source = _write_h5ad(tmp_path / "data.h5ad", genes=("cd3e", "CD3E", "Gnly"), raw=False)
    with pytest.raises(ValueError, match=r"1 gene names repeat.*'CD3E'"):
        aligned_expression(source, "X", _obs(ORDER))


# --------------------------------------------------------------------------- gseapy_check

BACKGROUND = [f"G{i:02d}" for i in range(40)]
LIBRARY = {
    "T_big": [f"G{i:02d}" for i in range(0, 8)],
    "T_mid": [f"G{i:02d}" for i in range(8, 14)],
    "T_mid_twin": [*(f"G{i:02d}" for i in range(8, 14)), "OUTSIDE1"],  # same genes inside
    "T_overlap": ["G05", "G06", "G07", "G08", "G09", "G20"],
    "T_small": ["G30", "G31", "G32"],
    "T_wide": [f"G{i:02d}" for i in range(0, 40, 3)],
    "T_tail": [f"G{i:02d}" for i in range(25, 40)],
    "T_out": ["OUTSIDE1", "OUTSIDE2", "G39"],  # 1 gene inside: below min_size
}
LISTS = [
    [f"G{i:02d}" for i in range(0, 8)],  # exactly T_big
    ["G08", "G09", "G10", "G11", "G12"],  # T_mid and its twin
    ["G30", "G31", "G05"],
    ["G20", "G21", "G33", "G03"],
    ["G25", "G27", "G29", "G35", "G15", "G06"],
    ["G14", "G18"],
]


@pytest.fixture
def check_inputs() -> tuple[feature_genes.GeneLists, genesets.TermMatrix, pd.DataFrame]:
    genes = np.array(BACKGROUND, dtype=object)
    column = {g: j for j, g in enumerate(BACKGROUND)}
    rows = [i for i, genes_ in enumerate(LISTS) for _ in genes_]
    cols = [column[g] for genes_ in LISTS for g in genes_]
    lists = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(LISTS), genes.size))
    index = pd.DataFrame(
        {"feature": [0, 0, 1, 2, 3, 5], "direction": ["up", "down", "up", "up", "up", "down"]}
    )
    gene_lists = feature_genes.GeneLists(
        genes=genes,
        lists=lists,
        index=index,
        genes_table=pd.DataFrame(),
        features=pd.DataFrame({"feature": range(6)}),
    )
    terms = genesets.term_matrix(LIBRARY, genes, min_size=2, max_size=30)
    enrichment = enrich.enrich_lists(lists, terms).join(index, on="list")
    enrichment = enrichment[["feature", "direction", *enrich.ENRICHMENT_COLUMNS]]
    return gene_lists, terms, enrichment


def test_gseapy_check_agrees_on_a_small_library(check_inputs) -> None:
    pytest.importorskip("gseapy")
    logging.getLogger("gseapy").setLevel(logging.WARNING)
    gene_lists, terms, enrichment = check_inputs
    assert "T_out" not in set(terms.terms)
    assert len(set(enrichment["list"])) == len(LISTS)  # every list hits some term

    # independently: the best p-value of each list (exact tails), the two smallest are "top"
    restricted = {t: set(g) & set(BACKGROUND) for t, g in LIBRARY.items() if t != "T_out"}
    best_p = [
        min(
            _exact_tail(len(set(genes) & members), len(members), len(genes), len(BACKGROUND))
            for members in restricted.values()
            if set(genes) & members
        )
        for genes in LISTS
    ]
    top = [int(i) for i in np.argsort(best_p, kind="stable")[:2]]
    assert top == [0, 1]

    check = gseapy_check(gene_lists, terms, enrichment, n_lists=2, seed=0)
    assert list(check.columns) == GSEAPY_CHECK_COLUMNS
    assert list(check["sample"]) == ["top", "top", "random", "random"]
    assert list(check["list"][:2]) == top
    random_lists = list(check["list"][2:])
    assert random_lists == sorted(random_lists)
    assert set(random_lists) <= {2, 3, 4, 5}
    assert len(set(random_lists)) == 2
    for row in check.itertuples(index=False):
        assert row.feature == gene_lists.index.loc[row.list, "feature"]
        assert row.direction == gene_lists.index.loc[row.list, "direction"]
        assert row.n_genes == len(LISTS[row.list])
        assert row.n_terms_ours == (enrichment["list"] == row.list).sum()
        assert row.n_terms_gseapy == row.n_terms_ours
    assert check["same_terms"].all()
    assert check["same_overlaps"].all()
    assert (check["max_relative_p_difference"] <= 1e-9).all()
    assert (check["max_relative_adjusted_p_difference"] <= 1e-9).all()

    again = gseapy_check(gene_lists, terms, enrichment, n_lists=2, seed=0)
    pd.testing.assert_frame_equal(again, check)  # deterministic for a seed

    everything = gseapy_check(gene_lists, terms, enrichment, n_lists=10)
    assert sorted(everything["list"]) == list(range(len(LISTS)))
    assert set(everything["sample"]) == {"top"}


def test_gseapy_check_without_lists_is_empty(check_inputs) -> None:
    gene_lists, terms, enrichment = check_inputs
    for out in (
        gseapy_check(gene_lists, terms, enrichment, n_lists=0),
        gseapy_check(gene_lists, terms, enrichment.iloc[:0], n_lists=3),
    ):
        assert out.empty
        assert list(out.columns) == GSEAPY_CHECK_COLUMNS


def test_gseapy_check_raises_on_a_tampered_table(check_inputs) -> None:
    pytest.importorskip("gseapy")
    logging.getLogger("gseapy").setLevel(logging.WARNING)
    gene_lists, terms, enrichment = check_inputs
    # the smallest p-value belongs to a "top" list, which is always checked
    row = enrichment["p_value"].idxmin()
    assert enrichment.loc[row, "p_value"] < 0.5

    tampered = enrichment.copy()
    tampered.loc[row, "p_value"] *= 2
    with pytest.raises(RuntimeError, match="disagrees with gseapy"):
        gseapy_check(gene_lists, terms, tampered, n_lists=2)

    tampered = enrichment.copy()
    tampered.loc[row, "overlap"] += 1
    with pytest.raises(RuntimeError, match="disagrees with gseapy"):
        gseapy_check(gene_lists, terms, tampered, n_lists=2)


def test_max_relative_difference() -> None:
    assert _max_relative_difference(np.array([0.1, 0.5]), np.array([0.1, 0.5])) == 0.0
    assert _max_relative_difference(np.array([]), np.array([])) == 0.0
    assert _max_relative_difference(np.array([0.0, 0.0]), np.array([0.0, 0.0])) == 0.0
    assert _max_relative_difference(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    assert _max_relative_difference(np.array([0.0]), np.array([1e-300])) == 1.0
    assert _max_relative_difference(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == pytest.approx(
        0.2 / 2.2, rel=1e-12
    )
    assert _max_relative_difference(np.array([-1.0]), np.array([1.0])) == 2.0
    assert np.isnan(_max_relative_difference(np.array([np.nan, 1.0]), np.array([0.5, 1.0])))
    assert np.isnan(_max_relative_difference(np.array([0.5, 1.0]), np.array([0.5, np.nan])))
    assert np.isnan(_max_relative_difference(np.array([0.0]), np.array([np.nan])))


def test_perfect_gene_lists_are_the_go_recovery_reference() -> None:
    from cellconcepts.enrich.genesets import term_matrix
    from cellconcepts.enrich.recovery import perfect_list_recovery

    library = {
        "A": ["a", "b", "c"],
        "A twin": ["A", "B", "C", "zz"],  # the same genes inside the background
        "C": ["d", "e"],
        "wide": ["a", "d", "f", "g", "h"],
    }
    background = term_matrix(library, list("abcdefghij"), min_size=2, max_size=10)
    groups = pd.DataFrame(
        {
            "gene_group": ["g1", "g2", "g3"],
            "go_term": ["A", "C", "wide"],
            "genes": ["a;b;c", "d;e;notscreened", "f;g"],
        }
    )
    table = perfect_list_recovery(groups, background, fdr=0.5).set_index("group")
    assert table["perfect_list_size"].tolist() == [3, 2, 2]
    assert table.loc["g1", "perfect_recovered"] and not table.loc["g1", "perfect_recovered_strict"]
    assert table.loc["g2", "perfect_recovered_strict"]
    # f;g lies inside 'wide' only: its term ranks first, with p = C(5,2)/C(10,2) = 10/45,
    # adjusted over the 4 terms tested (Benjamini-Hochberg, rank 1): 40/45, above the FDR
    assert table.loc["g3", "perfect_rank"] == 1
    assert table.loc["g3", "perfect_fdr"] == pytest.approx(40 / 45)
    assert not table.loc["g3", "perfect_recovered"]
