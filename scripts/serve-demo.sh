#!/usr/bin/env bash
# Set up a virtual environment and start the server on the demo recording
# (written on first run), or on the recording given as the first argument.
# It listens on this machine only and serves the recording's folder only, unless
# BIND_ADDRESS or DATA_ROOTS say otherwise. Configure with environment variables
# (PORT, TILE_CACHE_MB, ...: docs/configuration.md).
# pip runs only when pyproject.toml changed since the last install (REINSTALL=1 forces it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv plot
cat >&2 <<'HINT'
Open the "web viewer at" link printed below in a browser to look at the recording.
In another terminal, use the environment this made: `source .venv/bin/activate`, then
`python examples/quickstart.py`, `mef3io-server ls`, `mef3io-server info "$(mef3io-server demo)"`.
HINT
if [ $# -gt 0 ]; then
  if [ -z "${BIND_ADDRESS:-}" ]; then
    export BIND_ADDRESS=localhost
  fi
  if [ -z "${HTTP_PORT:-}" ]; then
    export HTTP_PORT=8080        # the web viewer; its link is printed at start-up
  fi
  if [ -z "${DATA_ROOTS:-}" ]; then
    DATA_ROOTS="$(cd "$(dirname "$1")" && pwd -P)"
    export DATA_ROOTS
  fi
  exec .venv/bin/mef3io-server serve "$@"
fi
exec .venv/bin/mef3io-server serve --demo
