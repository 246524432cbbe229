"""cellconcepts: sparse dictionary learning on biology foundation-model embeddings.

The Snakemake workflow (workflow/Snakefile) calls one stage function per rule
(`cellconcepts.stages`); the science lives in the other subpackages.
"""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


def share_with_jobs() -> str:
    """Put the folder that holds this package first on PYTHONPATH, so that the workflow's jobs
    (fresh Python processes, in a conda env too) import the same package as the Snakefile that
    imported this one, wherever the workflow lives (also as a module of another workflow).
    Returns that folder."""
    root = str(Path(__file__).resolve().parents[1])
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *current])
    return root
