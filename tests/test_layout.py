"""Every result path comes from `cellconcepts.layout`: the rules spell none, no two rules declare
the same file, and the layout names each file once."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from testkit import REPO, run_snakemake

from cellconcepts.layout import DATASET_FILES, FOLDERS, RUN_ENTRIES, ResultsLayout
from cellconcepts.variant import Variant

RULES = sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "workflow" / "Snakefile"]
# Paths a rule file may spell: the workflow's own files (scripts, report captions, conda env,
# schema, rule files, the default config), never a result.
ALLOWED = re.compile(r"^(\.\./)*(scripts|report|envs|schemas|rules|config)/")
STRING = re.compile(r"""(?<![\w])[rbuf]*("[^"\n]*"|'[^'\n]*')""")


def test_the_rules_spell_no_result_path():
    offenders = []
    for path in RULES:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if '"' not in line.split("#", 1)[-1] else line
            for literal in STRING.findall(code):
                text = literal[1:-1]
                if "/" in text and not ALLOWED.search(text):
                    offenders.append(f"{path.name}:{i}: {text}")
            if 'config["results"]' in code and "ResultsLayout" not in code:
                offenders.append(f"{path.name}:{i}: reads config['results'] itself")
    assert not offenders, "\n".join(offenders)


def _calls(paths: ResultsLayout) -> dict[str, str]:
    """One call of every path the layout gives, by a readable name."""
    v = "icfl_pca_k8_seed0"
    return {
        "dataset": paths.dataset("d"),
        "dataset_file": paths.dataset_file("tables/x.csv", "d"),
        "validation": paths.validation("d"),
        "headline": paths.headline("d"),
        "tokens": paths.tokens("d"),
        "token_obs": paths.token_obs("d"),
        "whitening": paths.whitening("d", "pca"),
        "embedding": paths.embedding("umap.parquet", "d"),
        "raw": paths.raw("probing.csv", "d"),
        "images": paths.images("masks.npy", "d"),
        "ground_truth": paths.ground_truth("atoms.npy", "d"),
        "heatmaps": paths.heatmaps("selected.csv", "d"),
        "cellprofiler": paths.cellprofiler("profiles.parquet", "d"),
        "table": paths.table("claim.csv", "d"),
        "figure": paths.figure("claim.png", "d"),
        "browser": paths.browser("d"),
        "log": paths.log("probe_raw", "d"),
        "benchmark": paths.benchmark("probe_raw", "d"),
        "model": paths.model("codes.npz", "d", v),
        "checkpoints": paths.checkpoints(v, "d"),
        "enrich": paths.enrich("enrichment.csv", "d", v),
        "model_log": paths.model_log("train", "d", v),
        "model_benchmark": paths.model_benchmark("train", "d", v),
        "gene_sets": paths.gene_sets("GO"),
        "paper_map": paths.paper_map(".md"),
        "run_log": paths.run_log("paper_map"),
        "run_benchmark": paths.run_benchmark("paper_map"),
    }


def test_each_path_is_named_once():
    """Distinct layout entries never give the same path: a path reached two ways fails. The
    one entry that takes a relative path (the paper map's) is its own check."""
    calls = _calls(ResultsLayout("results"))
    assert calls.pop("dataset_file") == calls["table"].replace("claim.csv", "x.csv")
    repeated = [p for p, n in Counter(calls.values()).items() if n > 1]
    assert not repeated, repeated
    assert calls["model"] == "results/d/models/icfl_pca_k8_seed0/codes.npz"
    assert calls["gene_sets"] == "results/gene_sets/GO.gmt"


def test_templates_carry_the_rules_wildcards():
    paths = ResultsLayout("out/")
    assert paths.model("model.pt") == f"out/{{dataset}}/models/{Variant.TEMPLATE}/model.pt"
    assert paths.whitening() == "out/{dataset}/whitening/{whitening}.npz"
    assert paths.model_log("train") == f"out/{{dataset}}/logs/train_{Variant.TEMPLATE}.log"
    assert paths.models("codes.npz", "d", [Variant("topk", "none", 8, 1), "icfl_pca_k8_seed0"]) == [
        "out/d/models/topk_none_k8_seed1/codes.npz",
        "out/d/models/icfl_pca_k8_seed0/codes.npz",
    ]


def _declared(dry_run: str) -> list[tuple[str, str, str]]:
    """(rule, kind, path) of every output, log and benchmark a dry run lists."""
    found, rule = [], None
    for line in dry_run.splitlines():
        head = re.match(r"^(?:local)?rule (\w+):", line)
        if head:
            rule = head.group(1)
            continue
        item = re.match(r"^\s+(output|log|benchmark): (.+)$", line)
        if item and rule:
            found += [(rule, item.group(1), p.strip()) for p in item.group(2).split(",")]
    return found


@pytest.mark.slow
def test_every_declared_path_is_in_the_layout(tmp_path, demo_config):
    """The demo's 333 jobs: every output, log and benchmark lies in a folder the layout names,
    and no file is declared by two jobs."""
    result = run_snakemake(tmp_path, demo_config, "--cores", "1", "-n", "--forceall")
    assert result.returncode == 0, result.stderr[-3000:]
    declared = _declared(result.stdout)
    assert len({rule for rule, _, _ in declared}) >= 30
    root = demo_config["results"]
    outside = []
    for rule, kind, path in declared:
        parts = Path(path).relative_to(root).parts
        if parts[0] in demo_config["datasets"]:
            ok = parts[1] in FOLDERS or (len(parts) == 2 and parts[1] in DATASET_FILES)
        else:
            ok = parts[0] in RUN_ENTRIES
        if not ok:
            outside.append(f"{rule} {kind}: {path}")
    assert not outside, "\n".join(outside)
    twice = [p for p, n in Counter(p for _, k, p in declared if k == "output").items() if n > 1]
    assert not twice, twice
