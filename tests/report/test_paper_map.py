"""The paper map (cellconcepts.report.paper_map): the builder on hand-made tables, the generated
map against a finished run's tables (recomputed here with pandas), and docs/paper.md against the
code that generates its map and snapshot."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from testkit import REPO

from cellconcepts.report import paper_map as pm
from cellconcepts.report.paper_map import NOT_IN_RUN, Entry, build_map

# A finished demo: CELLCONCEPTS_DEMO_RESULTS, else the repository's results/ after
# `snakemake --cores all`; the test that needs one is skipped without.
# A finished demo: $CELLCONCEPTS_DEMO_RESULTS, else this checkout's results/, else the committed
# snapshot of a fresh-clone demo (docs/snapshot), so the check runs on every clone.
_RUN = REPO / "results"
DEMO = Path(
    os.environ.get(
        "CELLCONCEPTS_DEMO_RESULTS",
        _RUN
        if (_RUN / "cellpainting" / "tables" / "probing.csv").exists()
        else REPO / "docs" / "snapshot",
    )
)
DOCS = REPO / "docs" / "paper.md"


def _write(root: Path, dataset: str, file: str, table: pd.DataFrame) -> None:
    path = root / dataset / file
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    dead = pd.DataFrame(
        {
            "method": ["icfl"] * 3 + ["topk"] * 3,
            "whitening": ["pca"] * 6,
            "sparsity": [8] * 6,
            "seed": [0, 1, 2] * 2,
            "n_features": [128] * 6,
            "dead_features": [0, 1, 2, 10, 20, 60],
        }
    )
    _write(tmp_path, "screen", "tables/dead.csv", dead)
    best = pd.DataFrame(
        {
            "variant": ["icfl_pca_k8_seed0"] * 2 + ["icfl_pca_k8_seed1"] * 3 + ["raw"],
            "label": ["a", "b", "a", "b", "c", "a"],
            "best_avg": [0.2, 0.4, 0.1, 0.2, 0.6, 0.9],
            "verdict": ["x", "x", "y", "x", "y", "z"],
        }
    )
    _write(tmp_path, "screen", "tables/best.csv", best)
    return tmp_path


def _one(table: pd.DataFrame, **match) -> pd.Series:
    rows = table
    for column, value in match.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_mean_sd_and_n_per_model_with_paper_numbers_per_group(run: Path):
    entry = Entry(
        "Table 1",
        "dead",
        {"TopK + PCA": "8026"},
        "screen",
        "tables/dead.csv",
        "dead_features",
        by=("model",),
        of="n_features",
        digits=1,
    )
    table = build_map(run, ["screen"], entries=[entry])
    assert list(table["group"]) == ["ICFL + PCA", "TopK + PCA"]
    topk = _one(table, group="TopK + PCA")
    assert topk["value"] == 30.0
    assert topk["sd"] == pytest.approx(math.sqrt(700))  # (10, 20, 60): deviations -20, -10, 30
    assert topk["n"] == 3
    assert topk["demo"] == "30.0 +/- 26.5 (n = 3) of 128"
    assert topk["paper"] == "8026"
    assert _one(table, group="ICFL + PCA")["paper"] == "-"
    assert topk["target"] == f"snakemake --cores all {run.as_posix()}/screen/tables/dead.csv"


def test_per_seed_means_first_and_model_and_seed_from_the_variant_name(run: Path):
    entry = Entry("Fig. 8", "best", "-", "screen", "tables/best.csv", "best_avg",
                  by=("model",), per="seed")  # fmt: skip
    table = build_map(run, ["screen"], entries=[entry])
    icfl = _one(table, group="ICFL + PCA")
    # seed 0: (0.2 + 0.4) / 2 = 0.3; seed 1: (0.1 + 0.2 + 0.6) / 3 = 0.3
    assert icfl["value"] == pytest.approx(0.3)
    assert icfl["sd"] == pytest.approx(0.0)
    assert icfl["n"] == 2
    raw = _one(table, group="raw")  # no variant pattern: the name itself, no seed
    assert raw["value"] == pytest.approx(0.9)
    assert raw["demo"] == "0.900"


def test_globs_lists_text_columns_and_groups_by_k(run: Path):
    entries = [
        Entry("X", "glob", "-", "screen", "tables/best.csv", "best_avg",
              {"variant": "*_seed1", "label": ["a", "c"]}),
        Entry("X", "text", "-", "screen", "tables/best.csv", "verdict",
              {"variant": "icfl_*"}, by=("k",)),
    ]  # fmt: skip
    table = build_map(run, ["screen"], entries=entries)
    glob = table.iloc[0]
    assert glob["value"] == pytest.approx(0.35)
    assert glob["n"] == 2
    assert glob["selection"] == "variant = *_seed1; label = ['a', 'c']"
    text = table.iloc[1]
    assert text["group"] == "k = 8"
    assert text["demo"] == "x / y"
    assert math.isnan(text["value"])


def test_what_a_run_lacks_is_not_in_this_run(run: Path):
    entries = [
        Entry("A", "other dataset", "1", "pbmc", "tables/dead.csv", "dead_features"),
        Entry("B", "not built", "2", "screen", "tables/dead.csv", "dead_features"),
        Entry("C", "no rows", "3", "screen", "tables/best.csv", "best_avg", {"label": "zz"}),
        Entry("D", "missing file", "4", "screen", "tables/none.csv", "x"),
    ]
    built = ["screen/tables/best.csv", "screen/tables/none.csv"]
    table = build_map(run, ["screen"], built=built, entries=entries[:3])
    assert list(table["demo"]) == [
        f"{NOT_IN_RUN} (no dataset 'pbmc')",
        f"{NOT_IN_RUN} (this config does not build tables/dead.csv)",
        f"{NOT_IN_RUN} (no rows: label = zz)",
    ]
    assert list(table["paper"]) == ["1", "2", "3"]
    assert (table["n"] == 0).all()
    # Without a list of built tables, a missing file is not in this run either.
    assert build_map(run, ["screen"], entries=entries[3:]).iloc[0]["demo"] == (
        f"{NOT_IN_RUN} (no tables/none.csv)"
    )


@pytest.mark.parametrize(
    "entry",
    [
        Entry("T", "q", "-", "screen", "tables/dead.csv", "no_such_column"),
        Entry("T", "q", "-", "screen", "tables/dead.csv", "dead_features", {"task": "x"}),
        Entry("T", "q", "-", "screen", "tables/dead.csv", "dead_features", by=("label",)),
    ],
)
def test_a_table_without_a_named_column_fails_naming_file_and_column(run: Path, entry: Entry):
    missing = ({entry.column, *entry.where, *entry.by} - {"dead_features"}).pop()
    with pytest.raises(ValueError, match=rf"dead\.csv: no column '{missing}'"):
        build_map(run, ["screen"], entries=[entry])


def test_small_numbers_keep_two_significant_digits():
    assert pm._fmt(3.7e-06, 3) == "3.7e-06"
    assert pm._fmt(0.0, 3) == "0.000"
    assert pm._fmt(0.1234, 3) == "0.123"


def test_every_entry_names_a_known_item_and_needs_tables_the_rule_file_knows():
    assert {entry.item for entry in pm.ENTRIES} <= set(pm.ITEMS)
    assert set(pm.TABLE_NEEDS.values()) <= {
        "cellprofiler", "heatmaps", "screen_heatmaps", "microscopy", "screen_enrichment",
        "enrichment", "ground_truth",
    }  # fmt: skip
    rules = (REPO / "workflow" / "rules" / "paper_map.smk").read_text()
    for need in set(pm.TABLE_NEEDS.values()):
        assert f'"{need}":' in rules
    # The paper's items without a row of numbers are listed with the reason.
    assert {"Fig. 6A-D", "Fig. 7"} <= set(pm.UNMAPPED)


def _demo_map() -> pd.DataFrame:
    if not (DEMO / "cellpainting" / "tables" / "probing.csv").exists():
        pytest.skip(f"no finished demo under {DEMO} (set CELLCONCEPTS_DEMO_RESULTS)")
    if (DEMO / "paper_map.csv").exists():
        return pd.read_csv(DEMO / "paper_map.csv", keep_default_na=False, na_values=[""])
    return build_map(DEMO, ["synthetic", "pbmc", "cellpainting"])


def test_the_demo_map_equals_its_tables():
    """Numbers of the map (the rule's CSV where the run wrote one) recomputed from the tables."""
    table = _demo_map()
    assert (table["n"] > 0).all(), table[table["n"] == 0][["item", "quantity", "demo"]]

    def read(dataset, file):
        return pd.read_csv(DEMO / dataset / file)

    def value(item, dataset, group="", quantity=None):
        rows = table[(table["item"] == item) & (table["dataset"] == dataset)]
        rows = rows[rows["group"].fillna("") == group]
        if quantity is not None:
            rows = rows[rows["quantity"].str.contains(quantity)]  # a regular expression
        assert len(rows) == 1, (item, dataset, group, quantity)
        return rows.iloc[0]

    dead = read("synthetic", "tables/dead_features.csv")
    topk = dead[(dead.method == "topk") & (dead.whitening == "none")].dead_features
    row = value("Table 1", "synthetic", "TopK")
    assert (row["value"], row["sd"], row["n"]) == pytest.approx((topk.mean(), topk.std(), 3))

    counts = read("cellpainting", "tables/selectivity_counts.csv")
    sel = counts[(counts.variant.str.startswith("icfl_pca")) & (counts.task == "gene")]
    row = value("Task table", "cellpainting", quantity=r"task gene: features > 0\.2")
    assert row["value"] == pytest.approx(sel["n_features_sel_0.2"].mean())

    probing = read("cellpainting", "tables/probing.csv")
    raw = probing[(probing.variant == "raw") & (probing.task == "gene_group")].bta.item()
    assert value("Fig. 4A", "cellpainting", "raw", "gene_group")["value"] == pytest.approx(raw)

    corr = read("cellpainting", "tables/cp_correlation.csv")
    r = corr[corr.variant.str.startswith("icfl_pca_")].pearson_r
    row = value("Fig. 2C", "cellpainting", "ICFL + PCA")
    assert (row["value"], row["sd"]) == pytest.approx((r.mean(), r.std()))

    best = read("synthetic", "tables/best_selectivity.csv")
    mine = best[(best.method == "icfl") & (best.whitening == "pca")]
    seeds = mine[mine.task == "perturbation"].groupby("seed").best_avg.mean()
    row = value("Fig. 8", "synthetic", "ICFL + PCA")
    assert (row["value"], row["sd"], row["n"]) == pytest.approx((seeds.mean(), seeds.std(), 3))

    recon = read("pbmc", "tables/reconstruction.csv")
    k16 = recon[recon.variant.str.match(r"topk_none_k16_seed\d")].recon_cosine.mean()
    assert value("Fig. 4C", "pbmc", "TopK, k = 16")["value"] == pytest.approx(k16)

    summary = read("cellpainting", "tables/single_cell_summary.csv")
    p = summary[
        (summary.label == "actin_junctions") & (summary.comparison == "perturbed > unperturbed")
    ].p_value.item()
    assert value("Fig. 6E", "cellpainting", "actin_junctions", "unperturbed")["value"] == (
        pytest.approx(p)
    )
    images = read("cellpainting", "tables/single_cell_images.csv")
    cells = images[(images.label == "actin_junctions") & (images.image_id == "all")]
    assert value("Table 3", "cellpainting", quantity="^cells$")["value"] == cells.total_cells.item()

    channels = read("cellpainting", "tables/heatmap_channel_summary.csv").set_index("label")
    row = value("Fig. 5", "cellpainting", "er_expansion")
    assert row["demo"] == channels.loc["er_expansion", "top_abs_channel"]

    claim = read("pbmc", "tables/claim.csv")
    verdict = claim[
        (claim.task == "bulk_labels") & (claim.score == "heldout_avg") & (claim.sparsity == 8)
        & (claim["first"] == "icfl_pca") & (claim.second == "topk_none")
    ].verdict.item()  # fmt: skip
    assert value("Claim", "pbmc", "topk_none", r"verdict \(held out")["demo"] == verdict


def _docs_section(name: str) -> str:
    text = DOCS.read_text()
    found = re.search(rf"<!-- {name}: begin -->\n(.*?)<!-- {name}: end -->", text, re.S)
    assert found, f"docs/paper.md has no '{name}' section"
    return found.group(1)


def test_docs_paper_md_holds_the_generated_map():
    assert _docs_section("paper map") == pm.docs_markdown()
