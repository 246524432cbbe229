#!/usr/bin/env bash
# The peers' environments for benchmarks/peers.py and benchmarks/peers_quality.py, each its own
# venv; the project's environment is not touched. Run from the repository root:
#     bash benchmarks/peers/setup.sh            # overcomplete: benchmarks/peers/.venv
#     bash benchmarks/peers/setup.sh sae-lens   # sae-lens: benchmarks/peers/.venv-sae-lens
#     PYTHONPATH=workflow benchmarks/peers/.venv/bin/python benchmarks/peers.py
# Both import cellconcepts through PYTHONPATH=workflow, with the few packages it needs pinned in
# their requirements files.
# overcomplete needs torchvision, and PyPI's torchvision is a CUDA build that cannot load with
# the project's CPU torch wheel: its venv gets PyPI's CUDA torch 2.14.1 (about 3 GB; it runs on
# CPU too). sae-lens needs no torchvision: its venv keeps the CPU wheel of torch 2.13.0.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
peer="${1:-overcomplete}"
case "$peer" in
  overcomplete)
    venv="$here/.venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
    check="import overcomplete.sae" ;;
  sae-lens)
    venv="$here/.venv-sae-lens"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet torch==2.13.0
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements-sae-lens.txt"
    check="import sae_lens.saes.matching_pursuit_sae" ;;
  *)
    echo "usage: bash benchmarks/peers/setup.sh [overcomplete|sae-lens]" >&2
    exit 2 ;;
esac
PYTHONPATH="$here/../../workflow" "$venv/bin/python" -c \
  "$check; import torch, cellconcepts.dictionary.icfl; print('$peer ready: torch', torch.__version__)"
