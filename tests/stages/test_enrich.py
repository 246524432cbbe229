"""GO enrichment stages (cellconcepts.stages.enrich) on small hand-built inputs: one model's
tables and figures, the label terms and the GO recovery of simulated screens. The science
functions they call are tested in the test files of their modules (test_gene_lists.py,
test_enrichment_statistics.py, test_enrich_annotation.py, test_enrich_recovery.py, ...).

Expectations are worked out by hand from the inputs (ranks, FDRs, overlaps are written into the
tables, hypergeometric tails from ``math.comb``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from enrichment_tables import enrichment_table

from cellconcepts.enrich import statistics as enrich
from cellconcepts.stages.enrich import enrich_model, enrichment_labels, go_recovery

FDR = 0.05

# --------------------------------------------------------------------------- helpers


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
V1_ENRICHMENT = enrichment_table(
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
V2_ENRICHMENT = enrichment_table(
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


def _run_go_recovery(
    tmp_path: Path, best: dict[str, pd.DataFrame], **reference: object
) -> tuple[Path, Path]:
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
        **reference,
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


def test_go_recovery_with_the_perfect_list_reference(tmp_path: Path) -> None:
    # the screen: A1-A4, B1-B5, C1-C3 and the control NTC; a perfect list of a group is its
    # genes, so each planted term has all of them: p = 1 / C(12, n), BH over the 3 terms tested
    genes = [*(f"A{i}" for i in range(1, 5)), *(f"B{i}" for i in range(1, 6)), "C1", "C2", "C3"]
    obs = pd.DataFrame({"gene": [*genes, "NTC", None], "is_control": [False] * 12 + [True] * 2})
    obs.to_parquet(tmp_path / "obs.parquet")
    gmt = tmp_path / "sets.gmt"
    gmt.write_text(
        "T_alpha\t\ta1\tA2\tA3\tA4\tOUT\nT_beta\t\tB1\tB2\tB3\tB4\tB5\nT_other\t\tA1\tC1\tC2\n"
    )
    settings = {"screen": {"gene_column": "gene"}, "min_term_size": 2, "max_term_size": 10}
    table_path, summary_path = _run_go_recovery(
        tmp_path,
        {"v1": V1_BEST},
        obs=tmp_path / "obs.parquet",
        settings=settings,
        control={"column": "gene", "values": ["NTC"]},
        gene_sets=gmt,
    )
    table = pd.read_csv(table_path).set_index("group")
    assert list(table.columns[-5:]) == [
        "perfect_list_size",
        "perfect_rank",
        "perfect_fdr",
        "perfect_recovered",
        "perfect_recovered_strict",
    ]
    assert list(table["perfect_list_size"]) == [4, 5]
    assert list(table["perfect_rank"]) == [1, 1]
    np.testing.assert_allclose(
        table["perfect_fdr"], [3 / math.comb(12, 4), 3 / math.comb(12, 5)], rtol=1e-12
    )
    assert table["perfect_recovered"].all() and table["perfect_recovered_strict"].all()
    assert list(table["recovered"]) == [True, True]  # the rest is as without the reference
    summary = pd.read_csv(summary_path)
    assert (summary.loc[0, "perfect_list"], summary.loc[0, "perfect_list_strict"]) == (1.0, 1.0)


# --------------------------------------------------------------------------- label_terms_table

# feature 0: up list T1 (p 1e-5), T2 and T3 tied in p (T3 smaller: first), T4; a down list with
# a smaller p that must not show; feature 1: one term; feature 2: only a down list.
LABEL_ENRICHMENT = enrichment_table(
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


# --------------------------------------------------------------------------- enrich_model


def test_enrich_model_on_a_small_screen(tmp_path: Path) -> None:
    # 5 tokens each of G1-G4 and the control NTC; feature 0 is active on G1 and G2 (avg
    # selectivity 1 - (1 + 0 + 0 + 0) / 4 = 0.75 each), feature 1 on G3 (1.0), feature 2 nowhere
    genes = np.repeat(["G1", "G2", "G3", "G4", "NTC"], 5)
    obs = pd.DataFrame({"token_id": np.arange(25), "gene": genes, "is_control": genes == "NTC"})
    obs.to_parquet(tmp_path / "obs.parquet")
    codes = np.zeros((25, 3))
    codes[np.isin(genes, ["G1", "G2"]), 0] = 1.0
    codes[genes == "G3", 1] = 2.0
    sp.save_npz(tmp_path / "codes.npz", sp.csr_matrix(codes))
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("T12\t\tG1\tG2\nT3\t\tG3\tG4\nT4\t\tG4\tX\n")
    settings = {
        "min_term_size": 1,
        "max_term_size": 10,
        "fdr": 0.6,
        "label_min_selectivity": 0.5,
        "check_lists": 0,
        "figures": {"dotplot_features": 2, "dotplot_terms": 2},
        "screen": {"gene_column": "gene", "min_selectivity": 0.2, "top_n": 0},
    }
    out = {
        name: tmp_path / file
        for name, file in [
            ("enrichment", "enrichment.parquet"),
            ("enrichment_csv", "enrichment.csv"),
            ("genes", "genes.parquet"),
            ("annotation", "annotation.csv"),
            ("check", "check.csv"),
            ("summary", "summary.csv"),
        ]
    }
    enrich_model(
        obs=tmp_path / "obs.parquet",
        codes=tmp_path / "codes.npz",
        **out,
        dotplot=[tmp_path / "dotplot.png"],
        mode="screen",
        tasks=[{"name": "gene", "column": "gene"}],
        control={"column": "gene", "values": ["NTC"]},
        source=None,
        settings=settings,
        variant="m",
        gene_sets=gmt,
    )
    assert (tmp_path / "dotplot.png").is_file()
    enrichment = pd.read_parquet(out["enrichment"])
    assert list(enrichment.columns) == ["feature", "direction", *enrich.ENRICHMENT_COLUMNS]
    # list 0 {G1, G2} hits T12 (p = 1 / C(4, 2)); list 1 {G3} hits T3 (p = 2 / 4)
    assert list(enrichment[["feature", "term"]].itertuples(index=False, name=None)) == [
        (0, "T12"),
        (1, "T3"),
    ]
    np.testing.assert_allclose(enrichment["p_value"], [1 / 6, 1 / 2], rtol=1e-12)
    np.testing.assert_allclose(enrichment["fdr"], [1 / 2, 1.0], rtol=1e-12)  # BH over 3 terms
    annotation = pd.read_csv(out["annotation"], keep_default_na=False, na_values=[""])
    assert list(annotation["best_term"].fillna("-")) == ["T12", "T3", "-"]
    assert list(annotation["status"]) == ["ok", "ok", "no_selective_genes"]
    assert list(annotation["selective_labels"].fillna("")) == [
        "gene=G1 (0.75); gene=G2 (0.75)",
        "gene=G3 (1.00)",
        "",
    ]
    genes_table = pd.read_parquet(out["genes"])
    assert list(genes_table["gene"]) == ["G1", "G2", "G3"]
    assert pd.read_csv(out["check"]).empty
    summary = pd.read_csv(out["summary"]).iloc[0]
    assert summary[["variant", "mode"]].tolist() == ["m", "screen"]
    assert summary[
        [
            "n_features",
            "n_gene_lists",
            "background_genes",
            "background_genes_in_no_term",
            "library_terms",
            "terms_tested",
            "features_with_significant_term",
        ]
    ].tolist() == [3, 2, 4, 0, 3, 3, 1]
