#!/usr/bin/env bash
# Try several replicas behind a load balancer on this machine (docs/cluster.md).
#   bash scripts/cluster.sh up [N] [--balancer nginx|haproxy] [--port P] [--data DIR]
#   bash scripts/cluster.sh status
#   bash scripts/cluster.sh down
# Starts N replicas (default 3) and nginx (Debian's; installed when missing and run as
# root) on 127.0.0.1, the balancer on port 50051 (or $PORT), serving the demo recording's
# folder (or DIR). Everything listens on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import mef3io_server" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e .
fi
exec .venv/bin/python scripts/local_cluster.py "$@"
