#!/usr/bin/env bash
# shellcheck disable=SC2329 # the phases' functions are called by name, through phase()
# The GPU check, on an NVIDIA machine that starts bare and reaches no network, in one bounded
# run (default 560 s, GPU_CHECK_BUDGET_S): builds llama-cpp-python for CUDA there from the
# trimmed sdist that scripts/gpu_check_prepare.sh left in build/gpu-check (llama-server comes
# out of the same CMake tree), installs assistantd beside it, and runs scripts/gpu_check.py:
# NVML's and llama.cpp's free memory, a synthetic model of a realistic size, the estimate per
# device against what llama.cpp allocated, full and partial offload decode and prompt tok/s
# against the planner's prediction, and assistantd against llama-server (one and four streams).
#
#     bash scripts/gpu_check.sh          # carry build/gpu-check; results in $OUT
#
# Output: $OUT/gpu_check.log (all of this), $OUT/gpu_check.json (every number, with each
# phase's seconds), and the tails of the build's and the servers' logs. State stays in
# /tmp/gpu-check (GPU_CHECK_WORK): run again while the machine is still up and finished phases
# are skipped (the build resumes where it stopped). Exit 0: all done; 2: stopped at the
# deadline, run again to go on; 1: a phase failed (its log tail and what is missing are shown).
#
# Settings (environment): GPU_CHECK_PHASES (default "discover env source build measure"),
# GPU_CHECK_PYTHON (default: the first python3 >= 3.11), GPU_CHECK_WORK, GPU_CHECK_BUDGET_S,
# GPU_CHECK_JOBS, GPU_CHECK_LIBCUDA (the driver library to link). Without a GPU,
# GPU_CHECK_PHASES="discover env source build" GPU_CHECK_CONFIGURE_ONLY=1 GPU_CHECK_CUDA_ARCH=90
# checks the Python, the wheelhouse and the CUDA configure (nvcc and cuBLAS needed) and stops.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARRIED=$ROOT/build/gpu-check
NAME=llama_cpp_python-0.3.36
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
OUT=${OUT:-$ROOT/build/gpu-check-out}
BUDGET_S=${GPU_CHECK_BUDGET_S:-560}
PHASES=${GPU_CHECK_PHASES:-discover env source build measure}
JOBS=${GPU_CHECK_JOBS:-$(nproc)}
MEASURE_MIN_S=140 # the smallest model's quantizing and measuring (gpu_check.py NEEDS_S)
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
VENV=$WORK/venv
LOGS=$WORK/logs
PHASE_FILE=$WORK/phases.jsonl

mkdir -p "$OUT" "$WORK" "$LOGS"

say() { printf '[%4ds] %s\n' "$(($(date +%s) - START))" "$*"; }
left() { echo $((DEADLINE - $(date +%s))); }
wants() { [[ " $PHASES " == *" $1 "* ]]; }

# Each phase: its seconds and outcome, one JSON line (gpu_check.py puts them in its JSON).
record() { # name rc seconds note
    local note=${4//\"/\'}
    printf '{"phase": "%s", "rc": %d, "seconds": %d, "note": "%s"}\n' "$1" "$2" "$3" "$note" \
        >>"$PHASE_FILE"
}

phase() { # name function
    local name=$1 t0 rc
    wants "$name" || return 0
    t0=$(date +%s)
    say "--- phase $name ($(left) s left)"
    "$2"
    rc=$?
    local outcome="done"
    ((rc == 0)) || outcome="FAILED ($rc)"
    ((rc == 2)) && outcome="stopped at the deadline"
    say "--- phase $name: $outcome in $(($(date +%s) - t0)) s"
    record "$name" "$rc" "$(($(date +%s) - t0))" "${PHASE_NOTE:-}"
    PHASE_NOTE=
    return "$rc"
}

tail_of() { # file lines
    [[ -f $1 ]] || return 0
    echo "----- last $2 lines of $1"
    tail -n "$2" "$1"
    echo "-----"
}

# --- discover: what this machine has (reported, never fatal) ---------------------------------

find_python() {
    local candidate
    for candidate in ${GPU_CHECK_PYTHON:-} python3 python3.13 python3.12 python3.11; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

find_nvcc() {
    command -v nvcc 2>/dev/null && return 0
    local c
    for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
        [[ -x $c ]] && echo "$c" && return 0
    done
    return 1
}

cuda_top() { # nvcc: the toolkit's folder, as nvcc itself reports it
    local top
    top=$("$1" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
    readlink -f "${top:-$(dirname "$1")/..}"
}

discover() {
    echo "host: $(uname -srm), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2 " GiB RAM"}')"
    df -h "$WORK" | tail -1 | awk '{print "disk at '"$WORK"': " $4 " free of " $2}'
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version,compute_cap \
            --format=csv,noheader
    else
        echo "nvidia-smi: not found"
    fi
    local nvcc
    if nvcc=$(find_nvcc); then
        echo "nvcc: $nvcc: $("$nvcc" --version | tail -2 | head -1)"
        local top
        top=$(cuda_top "$nvcc")
        echo "CUDA toolkit $top: cuBLAS $(find "$top/" -name 'libcublas.so*' 2>/dev/null | head -1 \
            | grep . || echo 'not in it'), libcuda stub $(find "$top/" -path '*stubs/libcuda.so' \
            2>/dev/null | head -1 | grep . || echo 'not in it')"
    else
        echo "nvcc: not found"
    fi
    echo "cmake: $(cmake --version 2>/dev/null | head -1 || echo 'not on PATH')"
    echo "ninja: $(ninja --version 2>/dev/null || echo 'not on PATH')"
    echo "gcc: $(gcc --version 2>/dev/null | head -1 || echo 'not found')"
    local py
    if py=$(find_python); then
        echo "python: $py ($("$py" -V 2>&1)), pip $("$py" -m pip --version 2>/dev/null \
            | awk '{print $2}')"
        "$py" - <<'EOF'
import importlib.metadata as md
names = ["numpy", "cmake", "ninja", "scikit-build-core", "setuptools", "nvidia-ml-py",
         "pydantic", "fastapi", "uvicorn", "httpx", "gguf", "huggingface-hub", "torch"]
have = []
for name in names:
    try:
        have.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        have.append(f"{name} -")
print("python packages: " + ", ".join(have))
EOF
    else
        echo "python: no python3 >= 3.11 on PATH (set GPU_CHECK_PYTHON)"
    fi
    [[ -f $CARRIED/$NAME-trimmed.tar.gz ]] || echo "carried: no $CARRIED/$NAME-trimmed.tar.gz"
    echo "carried: $(du -sh "$CARRIED" 2>/dev/null | cut -f1) in $CARRIED"
    return 0
}

# --- env: a venv over the image's Python, the wheelhouse, assistantd --------------------------

env_setup() {
    local base
    if ! base=$(find_python); then
        echo "no python3 >= 3.11: assistantd needs one (set GPU_CHECK_PYTHON to its path)"
        return 1
    fi
    if [[ ! -f $VENV/.ready ]]; then
        rm -rf "$VENV"
        # A venv sees its base interpreter's packages, not those of the venv python3 may be
        # (the image's PyTorch venv): a .pth lists python3's own site-packages after ours, so
        # what the image has is used and only what it lacks comes from the wheelhouse.
        "$base" -m venv --without-pip "$VENV" || return 1
        local site
        site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        "$base" -c 'import site, sys; print("\n".join(site.getsitepackages()))' \
            >"$site/_gpu_check_base.pth"
        echo "venv $VENV over $base; base packages from: $(tr '\n' ' ' <"$site/_gpu_check_base.pth")"
        if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
            echo "no pip for $base: the image's Python has no pip module"
            return 1
        fi
        if ! "$VENV/bin/python" -m pip install --no-index --find-links "$CARRIED/wheels" \
            --no-warn-script-location -r "$CARRIED/requirements.txt" >"$LOGS/pip.log" 2>&1; then
            tail_of "$LOGS/pip.log" 25
            echo "missing above: carry its wheel (scripts/gpu_check_prepare.sh, SKIP_WHEELS)"
            return 1
        fi
        grep -E '^Successfully installed' "$LOGS/pip.log" || echo "(all there already)"
        if ! "$VENV/bin/python" -m pip install --no-deps --no-index --no-build-isolation \
            -e "$ROOT" >"$LOGS/pip-assistantd.log" 2>&1; then
            tail_of "$LOGS/pip-assistantd.log" 25
            return 1
        fi
        touch "$VENV/.ready"
    fi
    PY=$VENV/bin/python
    "$PY" -c 'import assistantd, gguf, numpy, httpx, pynvml; print("imports: ok")'
}

# --- source: the trimmed sdist, unpacked once ---------------------------------------------------

source_setup() {
    local tarball=$CARRIED/$NAME-trimmed.tar.gz
    if [[ ! -f $WORK/src/$NAME/pyproject.toml ]]; then
        [[ -f $tarball ]] || { echo "no $tarball: run scripts/gpu_check_prepare.sh first"; return 1; }
        rm -rf "$WORK/src"
        mkdir -p "$WORK/src"
        tar -xzf "$tarball" -C "$WORK/src" || return 1
    fi
    echo "source: $WORK/src/$NAME"
    # The model's source file is written now, in the background, while the build takes the
    # cores: one core and the disk.
    if wants measure && [[ -z ${SOURCE_PID:-} ]]; then
        (
            for shape in 8b 3b; do
                "$PY" "$ROOT/scripts/gpu_check.py" --work "$WORK" --write-source "$shape" || exit 1
            done
        ) >"$LOGS/source.log" 2>&1 &
        SOURCE_PID=$!
        echo "writing the 8b and 3b sources in the background (pid $SOURCE_PID)"
    fi
}

# --- build: the CUDA wheel and llama-server, one CMake tree -------------------------------------

built() {
    runtime_libs
    SERVER_BIN=$(find "$WORK/build" -name llama-server -type f -perm -u+x 2>/dev/null | head -1)
    [[ -n $SERVER_BIN ]] && "$PY" -c \
        'import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())' 2>/dev/null
}

# Library folders the CUDA build links from outside the loader's path (saved for a rerun).
runtime_libs() {
    [[ -s $WORK/ld_library_path && ${LD_LIBRARY_PATH:-} != *"$(cat "$WORK/ld_library_path")"* ]] \
        || return 0
    LD_LIBRARY_PATH=$(cat "$WORK/ld_library_path")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
}

# What CMake's FindCUDAToolkit may not find by itself in a toolkit that holds nvcc and the
# runtime alone (as this project's CPU machines have it): cuBLAS from the Python packages
# (PyTorch's nvidia-cublas: nvidia/cu13/include and lib), and the driver's libcuda.so.1 when
# the toolkit has no stub of it. Prints CMake arguments; writes the library folders to
# $WORK/ld_library_path, for the processes that load the build.
cuda_hints() { # nvcc
    local top d libs=() args=()
    top=$(cuda_top "$1")
    for d in "$top/lib64" "$top/targets/x86_64-linux/lib"; do [[ -d $d ]] && libs+=("$d"); done
    if find "$top/" -name cublas_v2.h 2>/dev/null | grep -q .; then
        echo "cuBLAS: in the toolkit ($top)" >&2
    else
        local pkg
        pkg=$("$PY" - <<'EOF'
import glob, sys
for base in sys.path:
    for header in sorted(glob.glob(f"{base}/nvidia/*/include/cublas_v2.h")):
        print(header.rsplit("/include/", 1)[0])
        sys.exit()
EOF
)
        if [[ -z $pkg ]]; then
            echo "cuBLAS: not in the toolkit ($top) nor in the Python's nvidia packages" >&2
            return 1
        fi
        echo "cuBLAS: not in the toolkit ($top); from the Python package at $pkg" >&2
        args+=("-DCUDA_cublas_LIBRARY=$(find "$pkg/lib" -name 'libcublas.so*' | sort | head -1)")
        args+=("-DCUDA_cublasLt_LIBRARY=$(find "$pkg/lib" -name 'libcublasLt.so*' | sort | head -1)")
        args+=("-DCMAKE_CUDA_FLAGS=-I$pkg/include" "-DCMAKE_CXX_FLAGS=-I$pkg/include")
        libs+=("$pkg/lib")
    fi
    if find "$top/" -path '*stubs/libcuda.so' 2>/dev/null | grep -q .; then
        echo "libcuda: the toolkit's stub" >&2
    else
        local driver=${GPU_CHECK_LIBCUDA:-} c
        [[ -n $driver ]] || driver=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 / {print $NF; exit}')
        for c in /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 \
            /usr/lib64/libcuda.so.1; do
            [[ -z $driver && -f $c ]] && driver=$c
        done
        if [[ -n $driver ]]; then
            echo "libcuda: no stub in the toolkit; the driver's $driver" >&2
            args+=("-DCUDA_cuda_driver_LIBRARY=$driver")
        else
            echo "libcuda: none found; building with GGML_CUDA_NO_VMM=ON (no link to it)" >&2
            args+=("-DGGML_CUDA_NO_VMM=ON")
        fi
    fi
    (IFS=:; echo "${libs[*]}") >"$WORK/ld_library_path"
    echo "${args[*]}"
}

build() {
    if built; then
        echo "already built: $SERVER_BIN, and a llama_cpp that offloads"
        return 0
    fi
    local nvcc cc hints
    nvcc=$(find_nvcc) || { echo "no nvcc (CUDA toolkit): the CUDA build cannot be made here"; return 1; }
    PATH=$(dirname "$nvcc"):$PATH
    export CUDACXX=$nvcc PATH
    cc=${GPU_CHECK_CUDA_ARCH:-}
    if [[ -z $cc ]]; then
        command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: no NVIDIA GPU or driver"; return 1; }
        cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
    fi
    [[ $cc =~ ^[0-9]+$ ]] || { echo "cannot read the compute capability ('$cc')"; return 1; }
    local base_bin
    base_bin=$(dirname "$("$(find_python)" -c 'import sys; print(sys.executable)')")
    export PATH=$VENV/bin:$PATH:$base_bin # cmake and ninja of the image's Python, if any
    command -v cmake >/dev/null || { echo "no cmake (>= 3.21) on PATH or in the Python"; return 1; }
    hints=$(cuda_hints "$nvcc") || return 1
    runtime_libs
    # The wheel's libraries and, with the tools on, llama-server in the same tree: one CUDA
    # compile for both. LLAVA_BUILD=OFF: tools/ adds mtmd itself (llama-server links it), and
    # llama-cpp-python loads mtmd only for images. No web UI: neither npm nor a download.
    CMAKE_ARGS="-DGGML_CUDA=on -DGGML_RPC=on -DCMAKE_CUDA_ARCHITECTURES=$cc -DLLAVA_BUILD=OFF"
    CMAKE_ARGS+=" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF"
    CMAKE_ARGS+=" -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF"
    CMAKE_ARGS+=" -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF $hints"
    # A host CPU with AMX (GPU servers often are Sapphire Rapids): llama.cpp's AMX kernels crash
    # on the first prompt (daemon/backend_probes.py NO_AMX), so leave them out as setup.sh does.
    if "${CXX:-c++}" -march=native -dM -E -x c++ /dev/null 2>/dev/null | grep -q __AMX_INT8__; then
        CMAKE_ARGS+=" -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
    fi
    export CMAKE_ARGS CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
    echo "CUDA arch $cc, $JOBS jobs, nvcc $nvcc, $(cmake --version | head -1)"
    echo "CMAKE_ARGS: $CMAKE_ARGS"
    if [[ -n ${GPU_CHECK_CONFIGURE_ONLY:-} ]]; then # checks the above without a GPU, no compile
        local steps
        # shellcheck disable=SC2086 # CMAKE_ARGS is a list of words
        cmake -S "$WORK/src/$NAME" -B "$WORK/build-configure" -G Ninja $CMAKE_ARGS \
            >"$LOGS/configure.log" 2>&1 || { tail_of "$LOGS/configure.log" 30; return 1; }
        steps=$(ninja -C "$WORK/build-configure" -n llama-server)
        echo "configured: llama-server takes $(grep -c . <<<"$steps") steps," \
            "$(grep -c '\.cu\.o' <<<"$steps") of them CUDA objects"
        return 0
    fi
    local limit=$(($(left) - MEASURE_MIN_S))
    ((limit > 60)) || { PHASE_NOTE="no time left to build"; return 2; }
    rm -rf "$WORK/dist"
    timeout --kill-after=10 "$limit" "$PY" -m pip wheel --no-deps --no-index \
        --no-build-isolation -v -w "$WORK/dist" \
        --config-settings=build-dir="$WORK/build" \
        --config-settings=build.targets=llama-server \
        "$WORK/src/$NAME" >"$LOGS/build.log" 2>&1 &
    local pid=$! step ticks=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 2
        ((++ticks % 15 == 0)) || continue # progress every 30 s: ninja's [done/all]
        step=$(tail -c 20000 "$LOGS/build.log" | grep -o '\[[0-9]*/[0-9]*\]' | tail -1)
        say "building: ${step:-configuring}"
    done
    wait "$pid"
    local rc=$?
    if ((rc == 124 || rc == 137)); then
        PHASE_NOTE="stopped at the deadline; run again to resume the build"
        say "build stopped after $limit s (the deadline): run the same command again to resume"
        return 2
    fi
    if ((rc != 0)); then
        grep -n -E 'error|Error|CMake Error|not found|No such file' "$LOGS/build.log" | head -20
        tail_of "$LOGS/build.log" 40
        return 1
    fi
    "$PY" -m pip install --no-deps --no-index --force-reinstall "$WORK"/dist/*.whl \
        >"$LOGS/pip-wheel.log" 2>&1 || { tail_of "$LOGS/pip-wheel.log" 20; return 1; }
    if ! built; then
        echo "built, but no llama-server under $WORK/build or llama_cpp does not offload"
        return 1
    fi
    echo "wheel: $(ls "$WORK"/dist/*.whl) ($(du -h "$WORK"/dist/*.whl | cut -f1))"
    echo "llama-server: $SERVER_BIN"
    ldd "$SERVER_BIN" | grep -E 'ggml|llama|cuda|cublas' | sed 's/^/    /'
}

# --- measure -------------------------------------------------------------------------------------

measure() {
    if [[ -n ${SOURCE_PID:-} ]]; then
        say "waiting for the model sources"
        wait "$SOURCE_PID" || { tail_of "$LOGS/source.log" 20; return 1; }
        SOURCE_PID=
    fi
    built || { echo "nothing built to measure (phase build)"; return 1; }
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    local limit=$(($(left) + 20))
    ((limit >= 120)) || limit=120 # the smallest model, late: better a result past the budget
    PYTHONUNBUFFERED=1 timeout --kill-after=10 "$limit" "$PY" \
        "$ROOT/scripts/gpu_check.py" --work "$WORK" --out "$OUT" --deadline "$DEADLINE" \
        --llama-server "$SERVER_BIN" --phases "$PHASE_FILE"
}

# --- the run ---------------------------------------------------------------------------------------

finish() {
    local rc=$1 f
    # The logs' tails beside the results (8 files come back at most, 16 MiB each).
    for f in "$LOGS/build.log" "$WORK/assistantd-full.log" "$WORK/assistantd-partial.log" \
        "$WORK/llama-server.log"; do
        [[ -f $f ]] && tail -c 4000000 "$f" >"$OUT/$(basename "$f")"
    done
    if [[ ! -s $OUT/gpu_check.json ]]; then # gpu_check.py never ran: the phases alone
        {
            printf '{"stopped_before_measuring": true, "phases": [\n'
            paste -sd, "$PHASE_FILE" 2>/dev/null
            printf ']}\n'
        } >"$OUT/gpu_check.json"
    fi
    say "exit $rc; results in $OUT"
    exit "$rc"
}

main() {
    : >"$PHASE_FILE"
    rm -f "$OUT/gpu_check.json"
    say "gpu_check: phases '$PHASES', budget $BUDGET_S s, work $WORK, out $OUT"
    phase discover discover
    PY=
    phase env env_setup || finish 1
    phase source source_setup || finish 1
    phase build build
    case $? in 0) ;; 2) finish 2 ;; *) finish 1 ;; esac
    if wants measure; then
        phase measure measure || finish 1
    fi
    finish 0
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
