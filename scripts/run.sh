#!/usr/bin/env bash
# Set up and run assistantd in the foreground. With no --model it measures the machine, plans
# the best model that fits, downloads it (or uses the cache, or the offline starter model when
# the hub is unreachable) and serves it. Arguments go to assistantd (e.g. --model FILE.gguf).
# Arguments are not setup's: choose the llama.cpp backend with ASSISTANT_BACKEND=cuda|hip|vulkan|
# metal|cpu (default: detected; see scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/assistantd "$@"
