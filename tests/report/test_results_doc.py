"""The demo numbers of docs/results.md and docs/paper.md are what the committed snapshot gives."""

from __future__ import annotations

import json
import re
import subprocess

import pandas as pd
import pytest
from testkit import REPO

from cellconcepts.report import results_doc as rd

SNAPSHOT = REPO / "docs" / "snapshot"
RESULTS_MD = REPO / "docs" / "results.md"
PAPER_MD = REPO / "docs" / "paper.md"


@pytest.mark.parametrize("doc", [RESULTS_MD, PAPER_MD], ids=lambda p: p.name)
def test_every_generated_block_is_what_the_snapshot_gives(doc):
    text = doc.read_text()
    assert rd.block_names(text), f"{doc.name} has no generated block"
    regenerated = rd.fill(text, SNAPSHOT, doc=doc.name)
    if regenerated != text:
        stale = [
            name
            for name in rd.block_names(text)
            if rd.BLOCKS[name](SNAPSHOT) not in text
        ]  # fmt: skip
        pytest.fail(
            f"{doc.name}: blocks {stale} differ from docs/snapshot; run "
            "`python -m cellconcepts.report.results_doc docs` in workflow/"
        )


def test_every_block_is_used_once():
    names = rd.block_names(RESULTS_MD.read_text()) + rd.block_names(PAPER_MD.read_text())
    assert sorted(names) == sorted(rd.BLOCKS)


def test_the_snapshot_names_a_fresh_clone_of_a_commit_of_this_repository():
    meta = json.loads((SNAPSHOT / "SNAPSHOT.json").read_text())
    assert meta["clean_clone"] is True
    assert meta["command"] == "snakemake --cores all"
    assert meta["jobs"] > 0 and meta["wall_seconds"] > 0
    assert (
        meta["files"]
        == len(list(SNAPSHOT.glob("*/tables/*.csv")))
        + len(list(SNAPSHOT.glob("*/headline.csv")))
        + 1
    )  # paper_map.csv
    shallow = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if (REPO / ".git").exists() and shallow != "true":
        found = subprocess.run(
            ["git", "-C", str(REPO), "cat-file", "-t", meta["commit"]],
            capture_output=True,
            text=True,
        )
        if found.returncode != 0 and "not a valid" not in found.stderr:
            pytest.skip(f"git cannot answer: {found.stderr}")
        assert found.stdout.strip() == "commit", f"{meta['commit']} is not a commit here"


def test_no_snapshot_file_is_over_one_megabyte():
    big = [p for p in SNAPSHOT.rglob("*") if p.is_file() and p.stat().st_size > 1_000_000]
    assert not big


def _prose(text: str) -> str:
    """Text without its generated blocks and without docs/paper.md's map (paper's numbers)."""
    text = re.sub(r"<!-- generated: ([\w.:-]+) -->.*?<!-- generated: end \1 -->", "", text,
                  flags=re.S)  # fmt: skip
    return re.sub(r"<!-- paper map: begin -->.*?<!-- paper map: end -->", "", text, flags=re.S)


# Decimal numbers the demo prose may state: settings and the paper's value, not results.
SETTINGS = {"0.9", "0.05", "0.71"}
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def test_the_demo_prose_states_no_result_outside_generated_blocks():
    """results.md up to its benchmark sections, and paper.md, quote no typed decimal."""
    demo = RESULTS_MD.read_text().split("## What another machine changes", 1)[0]
    for doc, text in (("results.md", demo), ("paper.md", PAPER_MD.read_text())):
        decimals = set(DECIMAL.findall(_prose(text)))
        assert decimals <= SETTINGS, f"typed numbers in docs/{doc}: {decimals - SETTINGS}"


# --- the generators on hand-made tables ------------------------------------------------------


def _claim(tmp_path, rows, seeds=(3, 3, 3)):
    folder = tmp_path / "synthetic" / "tables"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "claim.csv", index=False)
    variants = [("icfl", "pca"), ("topk", "pca"), ("topk", "none")]
    pd.DataFrame(
        [{"method": m, "whitening": w, "sparsity": 8, "n_seeds": n}
         for (m, w), n in zip(variants, seeds, strict=True)]
    ).to_csv(folder / "headline_seeds.csv", index=False)  # fmt: skip
    return tmp_path


def _claim_row(task, score, second, diff, low, high, verdict):
    return {"task": task, "score": score, "sparsity": 8, "first": "icfl_pca", "second": second,
            "mean_difference": diff, "low": low, "high": high, "verdict": verdict}  # fmt: skip


def test_verdicts_count_the_comparisons_that_name_a_side(tmp_path, monkeypatch):
    root = _claim(
        tmp_path,
        [
            _claim_row("t1", "insample_avg", "topk_pca", 0.1, 0.05, 0.2, "icfl_pca higher"),
            _claim_row("t1", "heldout_avg", "topk_pca", 0.1, -0.05, 0.2, "no difference"),
            _claim_row("t2", "insample_avg", "topk_pca", -0.3, -0.4, -0.2, "topk_pca higher"),
            _claim_row("t1", "insample_avg", "topk_none", 0.0, -0.1, 0.1, "no difference"),
        ],
    )
    monkeypatch.setattr(rd, "DATASETS", ("synthetic",))
    text = rd.verdict_block(root)
    assert text.splitlines() == [
        "- **synthetic**, ICFL + PCA vs TopK + PCA: 2 of 3 task x metric comparisons name a side "
        "(t1 under (a): ICFL + PCA higher; t2 under (a): TopK + PCA higher).",
        "- **synthetic**, ICFL + PCA vs TopK (no whitening): 0 of 1 task x metric comparisons name "
        "a side.",
    ]


def test_no_verdict_is_stated_with_fewer_than_three_seeds(tmp_path, monkeypatch):
    row = _claim_row("t1", "insample_avg", "topk_pca", 0.1, 0.05, 0.2, "icfl_pca higher")
    root = _claim(tmp_path, [row], seeds=(3, 2, 3))
    monkeypatch.setattr(rd, "DATASETS", ("synthetic",))
    assert rd.verdict_block(root) == (
        "- **synthetic**, ICFL + PCA vs TopK + PCA: no verdict (2 seed(s), fewer than 3)."
    )


def test_fill_rewrites_only_the_blocks_and_refuses_unknown_names(monkeypatch):
    monkeypatch.setitem(rd.BLOCKS, "x", lambda root: "new body")
    text = "before\n<!-- generated: x -->\nold\nlines\n<!-- generated: end x -->\nafter\n"
    assert rd.fill(text, SNAPSHOT) == (
        "before\n<!-- generated: x -->\nnew body\n<!-- generated: end x -->\nafter\n"
    )
    with pytest.raises(KeyError, match="unknown generated block 'nope'"):
        rd.fill("<!-- generated: nope -->\n<!-- generated: end nope -->", SNAPSHOT, doc="d.md")


def test_snapshot_copies_the_tables_and_describes_the_run(tmp_path):
    results = tmp_path / "run" / "results"
    (results / "pbmc" / "tables").mkdir(parents=True)
    (results / "pbmc" / "benchmarks").mkdir()
    (results / "pbmc" / "tables" / "a.csv").write_text("x\n1\n")
    (results / "pbmc" / "tables" / "a.md").write_text("not copied")
    (results / "pbmc" / "headline.csv").write_text("y\n2\n")
    (results / "pbmc" / "benchmarks" / "r.tsv").write_text("s\th:m:s\n1.5\t0\n")
    (results / "pbmc" / "benchmarks" / "q.tsv").write_text("s\th:m:s\n2.0\t0\n")
    with pytest.raises(FileNotFoundError, match="no paper_map.csv"):
        rd.take_snapshot(results, tmp_path / "snap", wall_seconds=10, jobs=3)
    (results / "paper_map.csv").write_text("item\n")
    meta = rd.take_snapshot(results, tmp_path / "snap", wall_seconds=61.04, jobs=3)
    snap = tmp_path / "snap"
    assert sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()) == [
        "SNAPSHOT.json",
        "paper_map.csv",
        "pbmc/headline.csv",
        "pbmc/tables/a.csv",
    ]
    assert meta["job_seconds"] == {"pbmc": 3.5}
    assert meta["jobs"] == 3 and meta["wall_seconds"] == 61.0 and meta["files"] == 3
    assert json.loads((snap / "SNAPSHOT.json").read_text()) == meta
    assert rd._minutes(meta["wall_seconds"]) == "1 min 1 s"


def test_machine_block_counts_the_verdicts_that_hold_on_the_other_run(tmp_path, monkeypatch):
    rows_a = [
        _claim_row("t1", "insample_avg", "topk_pca", 0.1, 0.05, 0.2, "icfl_pca higher"),
        _claim_row("t1", "heldout_avg", "topk_pca", 0.1, 0.01, 0.2, "icfl_pca higher"),
        _claim_row("t2", "insample_avg", "topk_pca", 0.0, -0.1, 0.1, "no difference"),
    ]
    rows_b = [
        _claim_row("t1", "insample_avg", "topk_pca", 0.1, 0.05, 0.2, "icfl_pca higher"),
        _claim_row("t1", "heldout_avg", "topk_pca", 0.05, -0.01, 0.1, "no difference"),
        _claim_row("t2", "insample_avg", "topk_pca", -0.2, -0.3, -0.1, "topk_pca higher"),
    ]
    snapshot = _claim(tmp_path / "snapshot", rows_a)
    other = _claim(tmp_path / "compare" / rd.OTHER_MACHINE, rows_b)
    (other / "SNAPSHOT.json").write_text(
        json.dumps({"commit": "abc1234", "date": "2026-12-06", "command": "snakemake",
                    "wall_seconds": 90, "environment": {"X": "1"}})
    )  # fmt: skip
    monkeypatch.setattr(rd, "DATASETS", ("synthetic",))
    text = rd.machine_block(snapshot)
    assert "| synthetic | 3 | 2 | 1 | 1 | 1 |" in text
    assert "`X=1`; 1 min 30 s" in text
    flips = [line for line in text.splitlines() if line.startswith("- synthetic")]
    assert len(flips) == 2
    assert flips[0].endswith("+0.100 [+0.010, +0.200] ICFL + PCA higher -> "
                             "+0.050 [-0.010, +0.100] no difference")  # fmt: skip
    # The claim summary marks the side that does not hold on the other run.
    summary = rd.verdict_block(snapshot)
    assert "t1 under (a), (b)*: ICFL + PCA higher" in summary
    assert summary.endswith("(#what-another-machine-changes)).")
