#!/usr/bin/env bash
# Prepare, here (where PyPI is reachable), what scripts/gpu_check.sh needs on a GPU machine that
# starts bare and reaches no network, in build/gpu-check/ (the one path to carry there):
#
#   llama_cpp_python-0.3.36-trimmed.tar.gz   llama-cpp-python's sdist without model vocabularies,
#                                           tests, docs, examples, media, the web UI's sources,
#                                           ggml backends other than CPU/CUDA/RPC, and .git
#   wheels/                                 the Python packages assistantd and the check need,
#                                           for CPython 3.11 and 3.12 on x86_64 Linux, except
#                                           the big ones the device's image has (numpy, cmake)
#   tokenizer.gguf                          SmolLM2's tokenizer alone (a GGUF with no tensors),
#                                           for the synthetic models the check writes there
#
# Fails when the carried folder is over 60 MiB, or the whole transfer (it plus the working tree)
# over 63 MiB: the device tool takes 64 MiB in all.
#
#     scripts/gpu_check_prepare.sh            # LCP_SDIST=path/to/the.tar.gz to skip the download
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=0.3.36
NAME=llama_cpp_python-$VERSION
DEST=$ROOT/build/gpu-check
CACHE=$ROOT/build/gpu-check-cache # not carried: downloads and the scratch tree
PY=${PYTHON:-$ROOT/.venv/bin/python}
CARRY_LIMIT_MIB=60
TOTAL_LIMIT_MIB=63
PY_VERSIONS=(3.11 3.12)
# Left out: cmake (30 MiB; the device image has CMake and ninja), and numpy for 3.11 (17 MiB; the
# image's python3 is 3.12 and has numpy). gpu_check.sh says what is missing if that changes.
SKIP_WHEELS=('cmake-*.whl' 'numpy-*-cp311-*.whl')

say() { printf '== %s\n' "$*"; }
die() { printf 'gpu_check_prepare: %s\n' "$*" >&2; exit 1; }

[[ -x $PY ]] || die "no Python at $PY (make the venv with scripts/setup.sh, or set PYTHON)"
if ! git -C "$ROOT" check-ignore -q build/gpu-check; then
    die "build/gpu-check is not ignored by git: it would travel twice (add build/ to .gitignore)"
fi
mkdir -p "$DEST" "$CACHE"

# --- 1. the sdist -----------------------------------------------------------------------------
sdist=${LCP_SDIST:-}
if [[ -z $sdist ]]; then
    for candidate in "$CACHE/$NAME.tar.gz" "/tmp/lcp-src/$NAME.tar.gz"; do
        [[ -f $candidate ]] && sdist=$candidate && break
    done
fi
if [[ -z $sdist ]]; then
    say "downloading the llama-cpp-python $VERSION sdist"
    "$PY" -m pip download --quiet --no-binary :all: --no-deps -d "$CACHE" \
        "llama-cpp-python==$VERSION"
    sdist=$CACHE/$NAME.tar.gz
fi
[[ -f $sdist ]] || die "no sdist at $sdist"
say "sdist: $sdist ($(du -h "$sdist" | cut -f1))"

# --- 2. trimmed ------------------------------------------------------------------------------
# Kept: what CMake reads when it builds the wheel and, in the same tree with
# LLAMA_BUILD_TOOLS=ON, llama-server: every tools/*/CMakeLists.txt and source (tools/CMakeLists
# adds them all at configure time), ggml's CPU, CUDA and RPC backends, vendor/ (cpp-httplib,
# nlohmann, miniaudio and stb for mtmd, which llama-server links). The web UI is built neither
# from npm nor downloaded (LLAMA_BUILD_UI=OFF, LLAMA_USE_PREBUILT_UI=OFF): the server embeds an
# empty asset table, so tools/ui keeps only its CMakeLists and the two templates.
say "trimming"
scratch=$CACHE/trim
rm -rf "$scratch"
mkdir -p "$scratch"
tar -xzf "$sdist" -C "$scratch"
top=$scratch/$NAME
[[ -d $top/vendor/llama.cpp ]] || die "$sdist has no vendor/llama.cpp"
lc=$top/vendor/llama.cpp
drop=(
    "$top/.git" "$top/.github" "$top/docs" "$top/docker" "$top/examples" "$top/tests"
    "$top/mkdocs.yml" "$top/.readthedocs.yaml" "$top/CHANGELOG.md"
    "$lc/models" "$lc/docs" "$lc/media" "$lc/tests" "$lc/examples" "$lc/pocs" "$lc/benches"
    "$lc/gguf-py" "$lc/conversion" "$lc/requirements" "$lc/requirements.txt" "$lc/skills"
    "$lc/ci" "$lc/grammars" "$lc/.github" "$lc/.devops" "$lc/convert_hf_to_gguf.py"
    "$lc/convert_hf_to_gguf_update.py" "$lc/convert_llama_ggml_to_gguf.py"
    "$lc/convert_lora_to_gguf.py" "$lc/build-xcframework.sh" "$lc/AUTHORS"
    "$lc/tools/server/tests" "$lc/tools/server/bench" "$lc/tools/server/public"
    "$lc/tools/server/webui" "$lc/tools/mtmd/tests" "$lc/tools/mtmd/test-1.jpeg"
    "$lc/tools/mtmd/test-2.mp3" "$lc/tools/mtmd/test-3.mp4" "$lc/tools/mtmd/legacy-models"
)
for backend in cann et hexagon hip metal musa opencl openvino sycl virtgpu vulkan webgpu \
    zdnn zendnn blas; do
    drop+=("$lc/ggml/src/ggml-$backend")
done
rm -rf "${drop[@]}"
# tools/ui: everything but what scripts/ui-assets.cmake reads with no UI to embed.
find "$lc/tools/ui" -mindepth 1 -maxdepth 1 \
    ! -name CMakeLists.txt ! -name ui.cpp.in ! -name ui.h.in ! -name sources.cmake \
    -exec rm -rf {} +
# scripts/: only ui-assets.cmake, the one file of it that CMake reads.
find "$lc/scripts" -mindepth 1 -maxdepth 1 ! -name ui-assets.cmake -exec rm -rf {} +
tarball=$DEST/$NAME-trimmed.tar.gz
tar -C "$scratch" -cf - "$NAME" | gzip -9 >"$tarball"
say "trimmed source: $tarball ($(du -h "$tarball" | cut -f1), $(du -sh "$top" | cut -f1) unpacked)"

# --- 3. the wheelhouse ------------------------------------------------------------------------
# Runtime needs of assistantd (pyproject.toml) and of llama-cpp-python, plus what builds them
# offline (--no-build-isolation): scikit-build-core for the wheel (0.10 has build.targets),
# setuptools for assistantd.
say "wheels"
constraints=$CACHE/constraints.txt
"$PY" -m pip freeze --exclude-editable | grep -v -i -E '^(llama.cpp.python|-e )' \
    | grep '==' >"$constraints" || true
# assistantd's own needs pinned to the versions tested here, so the check runs the same code
# (pip then installs these over other versions the image has, in the check's venv only);
# numpy stays a range: the image's is used, its wheel is carried for 3.12 alone.
reqs=$CACHE/requirements.txt
"$PY" - "$ROOT/pyproject.toml" "$constraints" >"$reqs" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
extra = ["typing-extensions", "diskcache", "jinja2", "scikit-build-core>=0.10", "setuptools>=77"]
def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()
pinned = {}
for line in open(sys.argv[2]):
    name, _, version = line.strip().partition("==")
    pinned[canon(name)] = version
for dep in deps + extra:
    name = canon(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0])
    if name == "llama-cpp-python":
        continue
    if name in pinned and name not in ("numpy", "setuptools", "scikit-build-core"):
        print(f"{name}=={pinned[name]}")
    else:
        print(dep)
EOF
wheels=$DEST/wheels
rm -rf "$wheels"
mkdir -p "$wheels"
platforms=()
for n in 17 27 28 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64)
for version in "${PY_VERSIONS[@]}"; do
    "$PY" -m pip download --quiet --only-binary=:all: --implementation cp \
        --python-version "$version" "${platforms[@]}" -c "$constraints" -r "$reqs" \
        -d "$wheels" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2) \
        || die "pip download for CPython $version failed"
done
for skip in "${SKIP_WHEELS[@]}"; do
    for f in "$wheels"/$skip; do
        [[ -e $f ]] || continue
        say "left out $(basename "$f") ($(du -h "$f" | cut -f1)): the device image has it"
        rm -f "$f"
    done
done
cp "$reqs" "$DEST/requirements.txt"
say "wheels: $(find "$wheels" -name '*.whl' | wc -l) files, $(du -sh "$wheels" | cut -f1)"

# --- 4. the tokenizer -------------------------------------------------------------------------
say "tokenizer"
(cd "$ROOT" && "$PY" -m scripts.gpu_check --write-tokenizer "$DEST/tokenizer.gguf")

# --- 5. sizes ---------------------------------------------------------------------------------
carried=$(du -sb "$DEST" | cut -f1)
tree=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null \
    | tail -1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
say "carried build/gpu-check: $(mib "$carried"); working tree: $(mib "$tree");" \
    "together $(mib $((carried + tree))) of 64 MiB"
((carried <= CARRY_LIMIT_MIB * 1048576)) || die "build/gpu-check is over $CARRY_LIMIT_MIB MiB"
((carried + tree <= TOTAL_LIMIT_MIB * 1048576)) || die "the transfer is over $TOTAL_LIMIT_MIB MiB"
say "ready: run on the GPU machine \`bash scripts/gpu_check.sh\` with carry [\"build/gpu-check\"]"
