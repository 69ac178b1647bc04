#!/usr/bin/env bash
# Set up a virtual environment and start the server on the demo recording
# (written on first run), or on the recording given as the first argument.
# Configure with environment variables (PORT, TILE_CACHE_MB, ...: docs/configuration.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
if [ $# -gt 0 ]; then
  exec .venv/bin/mef3io-server serve "$@"
fi
exec .venv/bin/mef3io-server serve --demo
