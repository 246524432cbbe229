"""Shared helpers: run the workflow of this checkout on a config in a temporary directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

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


@pytest.fixture
def demo_config() -> dict:
    """The shipped demo config (config/config.yaml) as a dict."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())
