#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.." && snakemake --rulegraph --quiet | dot -Tsvg >docs/rulegraph.svg
