#!/usr/bin/env bash
# Install real CellProfiler 5 (headless) on a Debian machine without conda:
# Debian's python3 with wxPython from apt, a venv that sees the system
# site-packages, then the CellProfiler nightly wheel from PyPI.
# Usage: scripts/install_cellprofiler.sh [VENV_DIR]   (default: .cellprofiler-venv)
# Afterwards the executable is VENV_DIR/bin/cellprofiler (the config's
# `cellprofiler.executable`). Conda users: envs/cellprofiler.yaml instead.
set -euo pipefail
venv="${1:-.cellprofiler-venv}"

packages=(python3 python3-venv python3-dev python3-wxgtk4.0
          default-libmysqlclient-dev openjdk-17-jdk-headless build-essential pkg-config)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/cellprofiler" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # The versions the tests ran with (scripts/pin_envs.py writes them).
    "$venv/bin/python" -m pip install --quiet --pre "cellprofiler-nightly==5.0.0.dev784" \
        -c "$(dirname "$0")/../envs/cellprofiler-constraints.txt"
fi
"$venv/bin/cellprofiler" --version
