"""Faults: a training job killed with SIGKILL resumes to byte-identical weights, and so does
a whole run whose Snakemake was killed (after `--unlock`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from testkit import REPO, run_snakemake

pytestmark = pytest.mark.slow

CONFIG = {
    "results": "results",
    "datasets": {
        "toy": {
            "kind": "synthetic",
            "synthetic": {
                "n_tokens": 3000,
                "n_dims": 24,
                "n_atoms": 40,
                "n_perturbations": 10,
                "n_cell_types": 2,
                "n_batches": 4,
                "test_batches": 1,
                "seed": 2,
            },
            "tasks": [{"name": "perturbation", "column": "perturbation", "group_by": "batch"}],
        }
    },
    "whitening": {"methods": ["none"]},
    "dictionary": {
        "methods": ["icfl"],
        "n_features": 64,
        "sparsity": [4],
        "icfl": {"atoms_per_iteration": 2},
        "train": {"steps": 3000, "batch_size": 256, "checkpoint_every": 100},
    },
    "evaluate": {"probe": {"max_iter": 100}},
}
MODEL = "results/toy/models/icfl_none_k4_seed0/model.pt"


def _start(workdir: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "1",
    ]
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_for_checkpoint(workdir: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    """Until training has written a checkpoint past its first (so the kill lands mid-run)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if list(workdir.glob("results/toy/checkpoints/*/*/last.previous.pt")):
            return
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode()[-3000:])
        time.sleep(0.05)
    raise AssertionError("no checkpoint within the time limit")


def _weights(workdir: Path) -> dict[str, torch.Tensor]:
    return torch.load(workdir / MODEL, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("straight")
    result = run_snakemake(workdir, CONFIG, "--cores", "1")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir


def _assert_same_results(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for table in ("headline.csv", "tables/probing.csv", "tables/best_selectivity.csv"):
        assert (a / "results/toy" / table).read_bytes() == (b / "results/toy" / table).read_bytes()


def test_a_killed_training_job_resumes_to_the_same_model(straight, tmp_path):
    process = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, process)
    # The training job of this run only: it is in the process group of this Snakemake.
    job = subprocess.run(
        ["pgrep", "-g", str(process.pid), "-f", "train_dictionary.py"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert job, "the training job is not running"
    for pid in job:
        os.kill(int(pid), signal.SIGKILL)
    output = process.communicate(timeout=600)[0].decode()
    assert process.returncode != 0 and "Error in rule train_dictionary" in output
    assert not (tmp_path / MODEL).exists()  # nothing finished-looking is left
    result = run_snakemake(tmp_path, CONFIG, "--cores", "1")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (
        "resuming from" in (tmp_path / "results/toy/logs/train_icfl_none_k4_seed0.log").read_text()
    )
    _assert_same_results(straight, tmp_path)


def test_a_killed_snakemake_is_unlocked_and_rerun(straight, tmp_path):
    process = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, process)
    os.killpg(process.pid, signal.SIGKILL)  # Snakemake and its jobs, as a node failure would
    process.wait(timeout=60)
    locked = run_snakemake(tmp_path, CONFIG, "--cores", "1")
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    unlock = run_snakemake(tmp_path, CONFIG, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    result = run_snakemake(tmp_path, CONFIG, "--cores", "1")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    _assert_same_results(straight, tmp_path)
