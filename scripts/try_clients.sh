#!/usr/bin/env bash
# Heavy real clients, run by hand as their users run them, against a running assistantd
# (start it first: scripts/run.sh --model FILE). aider (~700 MB) and Continue's CLI `cn` are
# installed into /tmp, not into the project's venv. What each got goes to stdout.
#   scripts/try_clients.sh [http://127.0.0.1:8377]
set -euo pipefail
BASE="${1:-http://127.0.0.1:8377}"
MODEL="$(curl -s "$BASE/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
echo "== model $MODEL at $BASE"

if [ ! -x /tmp/aider-venv/bin/aider ]; then
    python3 -m venv /tmp/aider-venv && /tmp/aider-venv/bin/pip install --quiet aider-chat
fi
work="$(mktemp -d)"
(cd "$work" && git init -q && printf 'def add(a, b):\n    pass\n' > calc.py && git add . && git commit -qm init)
echo "== aider: implement add() in calc.py"
(cd "$work" && OPENAI_API_BASE="$BASE/v1" OPENAI_API_KEY=unused /tmp/aider-venv/bin/aider \
    --model "openai/$MODEL" --no-auto-commits --yes-always --no-check-update --no-show-model-warnings \
    --no-stream --message "Implement add() in calc.py so it returns a + b." calc.py 2>&1 | tail -25)
echo "== calc.py after aider:"; cat "$work/calc.py"

if [ ! -x /tmp/cn/node_modules/.bin/cn ]; then
    (mkdir -p /tmp/cn && cd /tmp/cn && npm install --silent --no-audit --no-fund @continuedev/cli)
fi
cfg="$(mktemp -d)/config.yaml"
.venv/bin/assistantctl --url "$BASE" connect continue | sed '/^llama.vscode/,$d' > "$cfg"
echo "== cn -p with $cfg"
/tmp/cn/node_modules/.bin/cn --config "$cfg" -p "Explain in three sentences what a Python list is." 2>&1 | tail -20
