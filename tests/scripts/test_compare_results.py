"""scripts/compare_results.py --tables: numbers moved beyond the seeds' spread, verdicts flipped.

Small hand-made results folders with known spreads; no workflow run (fast).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "compare_results.py"
_spec = importlib.util.spec_from_file_location("compare_results", SCRIPT)
cr = importlib.util.module_from_spec(_spec)
sys.modules["compare_results"] = cr
_spec.loader.exec_module(cr)


def _headline(values: dict[str, list[float]], n_features: int) -> pd.DataFrame:
    rows = [
        {
            "method": method,
            "whitening": "pca",
            "sparsity": 8,
            "seed": seed,
            "n_features": n_features,
            "recon_cosine": v,
        }
        for method, vs in values.items()
        for seed, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


# Two seeds per method. icfl: mean 0.55 -> 0.60, sd 0.0707 both runs, allowed 0.1414: within.
# topk: mean 0.21 -> 0.41, sd 0.01414, allowed 0.0283: beyond. n_features 128 -> 130 on every
# seed: sd 0, so no spread to judge against.
OLD_HEADLINE = _headline({"icfl": [0.50, 0.60], "topk": [0.20, 0.22]}, 128)
NEW_HEADLINE = _headline({"icfl": [0.55, 0.65], "topk": [0.40, 0.42]}, 130)

VERDICT_COLUMNS = ["task", "score", "sparsity", "first", "second", "mean_difference", "low"]
VERDICT_COLUMNS += ["high", "verdict"]
OLD_VERDICTS = pd.DataFrame(
    [
        ["gene", "heldout_avg", 8, "icfl_pca", "topk_pca", 0.05, -0.01, 0.11, "no difference"],
        ["gene", "insample_avg", 8, "icfl_pca", "topk_pca", 0.0, -0.02, 0.02, "no difference"],
    ],
    columns=VERDICT_COLUMNS,
)
# Row 1: moves 0.02 within its half-width 0.06 but the verdict flips; row 2: moves 0.1, beyond
# the half-width 0.02, and (by construction) keeps its verdict.
NEW_VERDICTS = pd.DataFrame(
    [
        ["gene", "heldout_avg", 8, "icfl_pca", "topk_pca", 0.07, 0.01, 0.13, "icfl_pca higher"],
        ["gene", "insample_avg", 8, "icfl_pca", "topk_pca", 0.1, 0.08, 0.12, "no difference"],
    ],
    columns=VERDICT_COLUMNS,
)


def _write(root: Path, headline, verdicts, *, channel: str, sees: bool, wide, extra: bool):
    toy = root / "results" / "toy"
    (toy / "tables").mkdir(parents=True)
    headline.to_csv(toy / "headline.csv", index=False)
    verdicts.to_csv(toy / "tables" / "selectivity_verdicts.csv", index=False)
    pd.DataFrame(
        {"label": ["nucleolar"], "raw_probe_recall": [0.5], "encoder_sees": [sees]}
    ).to_csv(toy / "tables" / "group_detectability.csv", index=False)
    pd.DataFrame({"label": ["nucleolar"], "feature": [11], "top_channel": [channel]}).to_csv(
        toy / "tables" / "heatmap_channel_summary.csv", index=False
    )
    pd.DataFrame(
        {"label": ["a", "b"], "icfl_pca_k8_seed0": wide[0], "icfl_pca_k8_seed1": wide[1]}
    ).to_csv(toy / "tables" / "label_selectivity.csv", index=False)
    if extra:
        pd.DataFrame({"x": [1]}).to_csv(toy / "tables" / "old_only.csv", index=False)
    return root / "results"


@pytest.fixture
def runs(tmp_path):
    old = _write(
        tmp_path / "old",
        OLD_HEADLINE,
        OLD_VERDICTS,
        channel="rna",
        sees=True,
        wide=([0.1, 0.5], [0.3, 0.5]),
        extra=True,
    )
    # label a: mean 0.2 -> 0.25, sd 0.1414 (allowed 0.283): within; label b: 0.5 -> 0.5.
    new = _write(
        tmp_path / "new",
        NEW_HEADLINE,
        NEW_VERDICTS,
        channel="nucleus",
        sees=False,
        wide=([0.15, 0.5], [0.35, 0.5]),
        extra=False,
    )
    return old, new


def test_seed_means_within_and_beyond_the_spread():
    rep = cr.compare_table(OLD_HEADLINE, NEW_HEADLINE, "toy/headline.csv")
    assert rep.seeded
    assert rep.counts == {
        "identical": 0,
        "within_spread": 1,
        "beyond_spread": 1,
        "changed_no_spread": 2,
    }
    assert rep.moved == [
        "icfl/pca/8 n_features (seed mean): 128 -> 130 (changed, no spread)",
        "topk/pca/8 n_features (seed mean): 128 -> 130 (changed, no spread)",
        "topk/pca/8 recon_cosine (seed mean): 0.21 -> 0.41 (BEYOND 2 x seed sd 0.02828)",
    ]
    assert rep.flipped == []
    assert rep.failed


def test_verdict_flips_and_interval_spread():
    rep = cr.compare_table(OLD_VERDICTS, NEW_VERDICTS, "toy/tables/selectivity_verdicts.csv")
    assert not rep.seeded
    assert rep.key == ["sparsity", "task", "score", "first", "second"]
    assert rep.n_verdicts == 2
    assert rep.flipped == [
        "8/gene/heldout_avg/icfl_pca/topk_pca verdict: no difference -> icfl_pca higher"
    ]
    # mean_difference, low, high per row: row 1 all within 0.06, row 2 all beyond 0.02.
    assert rep.counts == {
        "identical": 0,
        "within_spread": 3,
        "beyond_spread": 3,
        "changed_no_spread": 0,
    }
    assert rep.moved[0] == (
        "8/gene/insample_avg/icfl_pca/topk_pca mean_difference: 0 -> 0.1 "
        "(BEYOND interval half-width 0.02)"
    )


def test_identical_tables_report_nothing():
    rep = cr.compare_table(OLD_VERDICTS, OLD_VERDICTS.copy(), "t.csv")
    assert rep.counts["identical"] == 6 and not rep.moved and not rep.flipped
    assert not rep.failed


def test_seed_sd_columns_are_the_spread():
    old = pd.DataFrame({"method": ["icfl"], "bta": [0.5], "bta_sd": [0.05]})
    new = pd.DataFrame({"method": ["icfl"], "bta": [0.65], "bta_sd": [0.05]})
    rep = cr.compare_table(old, new, "headline_seeds.csv")
    assert rep.counts["beyond_spread"] == 1 and rep.counts["identical"] == 0
    assert rep.moved == ["icfl bta: 0.5 -> 0.65 (BEYOND 2 x bta_sd 0.1)"]
    new["bta"] = 0.59
    assert cr.compare_table(old, new, "headline_seeds.csv").counts["within_spread"] == 1


def test_tables_mode_end_to_end(runs, tmp_path):
    old, new = runs
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(old), str(new), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "toy/headline.csv: rows 4 -> 4 (seeded); numbers 4: 0 identical, 1 within spread, "
        "1 BEYOND spread, 2 changed (no spread)"
    )
    assert "  FLIPPED nucleolar encoder_sees: True -> False" in lines
    assert "  FLIPPED nucleolar top_channel: rna -> nucleus" in lines
    assert (
        "toy/tables/label_selectivity.csv: rows 4 -> 4 (seeded); numbers 2: 1 identical, "
        "1 within spread, 0 BEYOND spread, 0 changed (no spread)"
    ) in lines
    assert "TABLE ONLY IN OLD toy/tables/old_only.csv" in lines
    assert lines[-1] == (
        "tables 5: 3 with flipped verdicts (3 flips), 2 with numbers beyond spread "
        "(4 numbers), 1 missing from NEW"
    )
    md = out.read_text()
    assert md.startswith("# Results compared")
    assert "## toy/tables/selectivity_verdicts.csv" in md
    flip = "8/gene/heldout_avg/icfl_pca/topk_pca verdict: no difference -> icfl_pca higher"
    assert f"- `{flip}`" in md


def test_tables_mode_same_run_exits_0_and_file_mode_unchanged(runs):
    old, _ = runs
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(old), str(old), "--tables"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines()[-1] == (
        "tables 6: 0 with flipped verdicts (0 flips), 0 with numbers beyond spread "
        "(0 numbers), 0 missing from NEW"
    )
    # Without --tables: the byte-level comparison as before.
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(old), str(old)], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == "identical 6, timing_only 0, differ 0, missing 0"
