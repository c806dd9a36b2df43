#!/usr/bin/env bash
# Set up and run the whole test suite against the real test models.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python scripts/fetch_models.py >/dev/null
.venv/bin/ruff check daemon tests scripts
.venv/bin/ruff format --check daemon tests scripts
.venv/bin/mypy -p assistantd
exec .venv/bin/python -m pytest "$@"
