"""Imported first by every rule script: run the cellconcepts package of this checkout.

Snakemake puts this folder on sys.path; conda envs made by `--use-conda` do not have the
package installed, and a pip-installed copy might be another version than the workflow's.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
