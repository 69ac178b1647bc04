#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run every test.
# Usage: bash scripts/test.sh [pytest arguments]
# pip runs only when pyproject.toml changed since the last install (REINSTALL=1 forces it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv dev
exec .venv/bin/python -m pytest "$@"
