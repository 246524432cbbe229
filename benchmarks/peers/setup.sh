#!/usr/bin/env bash
# The peers' environment for benchmarks/peers.py: its own venv, benchmarks/peers/.venv, with the
# pinned peers (requirements.txt) and the few packages the benchmark imports from cellconcepts
# (which it finds through PYTHONPATH=workflow). The project's environment is not touched.
# overcomplete needs torchvision, and PyPI's torchvision is a CUDA build that cannot load with
# the project's CPU torch wheel: this venv gets PyPI's CUDA torch 2.14.1 (about 3 GB; it runs on
# CPU too). Run from the repository root:
#     bash benchmarks/peers/setup.sh
#     PYTHONPATH=workflow benchmarks/peers/.venv/bin/python benchmarks/peers.py
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv"
"$here/.venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
PYTHONPATH="$here/../../workflow" "$here/.venv/bin/python" -c \
  "import overcomplete.sae, torch, cellconcepts.dictionary.icfl; print('peers ready: torch', torch.__version__)"
