"""What the tests share: this checkout's root, a tiny ViT, a tiny synthetic config, and a runner
of this repository's workflow on a config in a temporary directory. On sys.path through
pyproject's `pythonpath`, so any test imports it (`from testkit import REPO`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# A ViT small enough for a workflow test on CPU (32 px images of 6 channels, 4x4 patches).
TINY_VIT = {
    "img_size": 32,
    "patch_size": 8,
    "in_chans": 6,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
}


def run_snakemake(
    workdir: Path, config: dict, *args: str, timeout: int = 1200
) -> subprocess.CompletedProcess[str]:
    """Write `config` into `workdir` and run this repo's Snakefile there."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]
    # From the repository, so that Snakemake finds its workflow profile (profiles/default).
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


# A tiny synthetic run: one dataset, small dictionaries, few steps (tests/workflow).
TINY = {
    "results": "results",
    "datasets": {
        "toy": {
            "kind": "synthetic",
            "synthetic": {
                "n_tokens": 4000,
                "n_dims": 24,
                "n_atoms": 40,
                "n_perturbations": 10,
                "atoms_per_perturbation": 2,
                "n_cell_types": 2,
                "n_batches": 4,
                "test_batches": 1,
                "seed": 1,
            },
            "tasks": [
                {"name": "perturbation", "column": "perturbation", "group_by": "batch"},
                {"name": "batch", "column": "batch"},
            ],
        },
        "pbmc": {
            "kind": "scrna",
            "scrna": {"source": "pbmc68k_reduced", "autoencoder": {"epochs": 15}},
            "control": "all",
            "split": {"test_fraction": 0.2},
            "tasks": [{"name": "bulk_labels", "column": "bulk_labels"}],
            "dictionary": {"n_features": 48, "train": {"batch_size": 256}},
        },
    },
    "dictionary": {
        "n_features": 96,
        "sparsity": [4],
        "icfl": {"atoms_per_iteration": 2},
        "train": {"steps": 400, "batch_size": 512, "lr": 0.003, "checkpoint_every": 200},
    },
    "evaluate": {"probe": {"max_iter": 200}},
}
