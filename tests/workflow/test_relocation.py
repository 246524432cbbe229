"""A finished run moved to another folder reruns nothing; an edited CellProfiler pipeline reruns
the jobs that may run the real CellProfiler, and only those.

One tiny run: a user's token table (`kind: tokens`) and two microscopy datasets on a user's
image store and ViT checkpoint, `screen` measured by cp-measure and `cpx` with its own `.cppipe`
(backend `auto`, which falls back to cp-measure where CellProfiler is not installed; later
switched to `cellprofiler` and accepted with `--touch`, standing in for a run of the real one).
Each test works on a copy (shutil.copytree keeps the files' mtimes, as `cp -a` does).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from testkit import REPO, TINY_VIT, run_snakemake

from cellconcepts.microscopy import checkpoints, vit
from cellconcepts.sources import cellpainting

pytestmark = pytest.mark.slow

SIMULATION = {
    "n_cell_types": 2,
    "plates_per_cell_type": 2,
    "genes_per_group": 3,
    "n_no_effect_genes": 2,
    "control_wells": 2,
    "sites_per_well": 1,
    "image_size": 32,
    "seed": 1,
}
TASKS = [
    {"name": "gene_group", "column": "gene_group", "group_by": "plate"},
    {"name": "batch", "column": "batch"},
]
CELLPROFILER = {"chunks": 1, "task": "gene_group", "target_active": 20, "sweep": [5, 10, 20]}
PIPELINE = "my_pipeline.cppipe"
# A part of `rule all`, to keep it to minutes on 2 cores: a dictionary trained and applied on
# the user's tokens, and both microscopy datasets' CellProfiler profiles.
TARGETS = [
    "results/mine/models/icfl_pca_k4_seed0/codes.npz",
    "results/screen/cellprofiler/profiles.parquet",
    "results/cpx/cellprofiler/profiles.parquet",
]


def microscopy(backend: str, **cellprofiler) -> dict:
    return {
        "kind": "microscopy",
        "microscopy": {
            "images": "my_images",
            "model": {"checkpoint": "my_model", "architecture": TINY_VIT},
            "layer": 1,
            "heatmaps": {"enabled": False},
            "cellprofiler": {**CELLPROFILER, "backend": backend, **cellprofiler},
        },
        "control": {"column": "gene", "values": ["non-targeting"]},
        "tasks": TASKS,
    }


CONFIG = {
    "results": "results",
    "datasets": {
        "mine": {
            "kind": "tokens",
            "tokens": {"path": "emb.parquet", "embedding_columns": "emb_"},
            "control": {"column": "guide", "values": ["non-targeting"]},
            "split": {"test_fraction": 0.2, "group_by": "plate"},
            "tasks": [{"name": "guide", "column": "guide", "group_by": "plate"}],
        },
        "screen": microscopy("cp_measure"),
        "cpx": microscopy("auto", pipeline=PIPELINE),
    },
    "dictionary": {
        "methods": ["icfl"],
        "n_features": 32,
        "sparsity": [4],
        "train": {"steps": 100, "batch_size": 64},
    },
    "evaluate": {"probe": {"max_iter": 200}},
    "enrich": {"enabled": False},
}


def _jobs(result) -> set[tuple[str, str | None]]:
    """(rule, dataset) of every job a dry run lists (empty when nothing is to be done); the
    jobs found must add up to the total of its "Job stats" table."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    if "Nothing to be done" in output:
        return set()
    jobs: list[list] = []
    for line in output.splitlines():
        started = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if started:
            jobs.append([started.group(1), None])
        wildcards = re.match(r"^\s+wildcards: (.*)$", line)
        if wildcards and jobs:
            found = re.search(r"(?:^|, )dataset=([^,]+)", wildcards.group(1))
            jobs[-1][1] = found.group(1) if found else None
    total = re.search(r"^total\s+(\d+)$", output.split("Job stats:", 1)[1], re.MULTILINE)
    assert total and int(total.group(1)) == len(jobs), output[-4000:]
    return {(rule, dataset) for rule, dataset in jobs}


def dry_run(workdir: Path, config: dict) -> set[tuple[str, str | None]]:
    return _jobs(run_snakemake(workdir, config, "--cores", "1", "-n", *TARGETS, timeout=600))


def _metadata(workdir: Path) -> dict[str, dict]:
    """Snakemake's record of every output: {path: record} (a record's name is the path in
    URL-safe base64, split into folders of '@'-prefixed parts where it is long)."""
    folder = workdir / ".snakemake" / "metadata"
    records = {}
    for path in folder.rglob("*"):
        if path.is_file():
            name = "".join(part.lstrip("@") for part in path.relative_to(folder).parts)
            records[base64.urlsafe_b64decode(name).decode()] = json.loads(path.read_text())
    return records


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("relocation") / "run"
    workdir.mkdir()
    rng = np.random.default_rng(0)
    n = 300
    table = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"emb_{i}" for i in range(6)])
    table["guide"] = [("non-targeting", "G1", "G2")[i % 3] for i in range(n)]
    table["plate"] = [f"p{i % 5}" for i in range(n)]
    table.to_parquet(workdir / "emb.parquet")
    screen = cellpainting.simulate_screen(**SIMULATION, progress=False)
    (workdir / "my_images").mkdir()
    np.save(workdir / "my_images" / "images.npy", screen.images)
    screen.obs.to_parquet(workdir / "my_images" / "obs.parquet")
    torch.manual_seed(0)
    checkpoints.save_pretrained(vit.ViTEncoder(vit.ViTConfig(**TINY_VIT)), workdir / "my_model")
    shutil.copy2(REPO / "resources" / "cellprofiler" / "cellpainting.cppipe", workdir / PIPELINE)
    result = run_snakemake(workdir, CONFIG, "--cores", "2", *TARGETS)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return workdir


def _copy(finished: Path, tmp_path: Path) -> Path:
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(finished, moved, symlinks=True)  # copy2: mtimes kept
    return moved


def test_a_moved_run_reruns_nothing(finished, tmp_path):
    moved = _copy(finished, tmp_path)
    assert dry_run(moved, CONFIG) == set()
    # Nothing machine-specific in what Snakemake recorded: no absolute path of the run or of
    # the repository in any job's params or inputs.
    for output, record in _metadata(moved).items():
        text = json.dumps([record.get("params"), record.get("input")])
        for absolute in (str(finished), str(REPO)):
            assert absolute not in text, (output, record["rule"])
    # cp-measure never reads the .cppipe: not an input, not in params.
    for output, record in _metadata(moved).items():
        if record["rule"] == "cellprofiler_measure":
            text = json.dumps([record["params"], record["input"]])
            assert ("cppipe" in text) == output.startswith("results/cpx/"), output


def test_an_edited_pipeline_reruns_the_cellprofiler_jobs_only(finished, tmp_path):
    workdir = _copy(finished, tmp_path)

    def edit_pipeline():
        pipeline = workdir / PIPELINE
        pipeline.write_text(pipeline.read_text() + "\n")

    cellprofiler_jobs = {("cellprofiler_measure", "cpx"), ("cellprofiler_profiles", "cpx")}

    # backend `auto`: the real CellProfiler reads it wherever it is installed
    edit_pipeline()
    jobs = dry_run(workdir, CONFIG)
    assert jobs == cellprofiler_jobs, sorted(jobs)  # nothing of screen's cp-measure jobs

    # backend `cellprofiler`: accepted as run (--touch records the new params), then edited
    config = json.loads(json.dumps(CONFIG))
    config["datasets"]["cpx"]["microscopy"]["cellprofiler"]["backend"] = "cellprofiler"
    touched = run_snakemake(workdir, config, "--cores", "1", "--touch", *TARGETS, timeout=600)
    assert touched.returncode == 0, (touched.stdout + touched.stderr)[-4000:]
    assert dry_run(workdir, config) == set()
    edit_pipeline()
    jobs = dry_run(workdir, config)
    assert jobs == cellprofiler_jobs, sorted(jobs)
