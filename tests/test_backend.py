"""Which llama.cpp backend setup builds: `assistantd.backend.detect()` and `daemon/backend.py`.

The GPUs are the one thing these tests cannot have here (no NVIDIA or AMD card, no Vulkan GPU):
nvidia-smi, nvcc, rocminfo, hipcc, hipconfig, vulkaninfo and glslc are stand-ins, small /bin/sh
scripts in tmp_path that print what the real tools print. They run by their #! line, so the PATH
given to detection holds only them: a real tool elsewhere on this machine cannot leak in (the
setup.sh test adds /usr/bin:/bin after them, for the shell's own commands). The last tests ask
this real machine, which has an nvcc (/usr/local/bin/nvcc) but no GPU driver.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import llama_cpp
import pytest

from assistantd.backend import BACKENDS, UnknownBackend, detect, link_toolkit
from tests.support.daemons import ROOT

SCRIPT = ROOT / "daemon" / "backend.py"

SMI_LIST = "GPU 0: NVIDIA GeForce RTX 4060 (UUID: GPU-5f1c2d3e-0000-1111-2222-333344445555)\n"
SMI_HEADER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}              Driver Version: {driver}      CUDA Version: {cuda}     |
+-----------------------------------------+------------------------+----------------------+
"""
NVCC_VERSION = """\
nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Cuda compilation tools, release {cuda}, V{cuda}.88
"""
ROCMINFO = """\
ROCk module is loaded
=====================
HSA Agents
==========
*******
Agent 1
*******
  Name:                    AMD Ryzen 9 7950X 16-Core Processor
  Marketing Name:          AMD Ryzen 9 7950X 16-Core Processor
  Device Type:             CPU
*******
Agent 2
*******
  Name:                    gfx1100
  Marketing Name:          AMD Radeon RX 7900 XTX
  Device Type:             GPU
  ISA Info:
    ISA 1
      Name:                    amdgcn-amd-amdhsa--gfx1100
"""
LLVMPIPE = """\
GPU{n}:
\tapiVersion         = 1.3.255
\tvendorID           = 0x10005
\tdeviceType         = PHYSICAL_DEVICE_TYPE_CPU
\tdeviceName         = llvmpipe (LLVM 15.0.6, 256 bits)
"""
DISCRETE = """\
GPU{n}:
\tapiVersion         = 1.3.260
\tvendorID           = 0x1002
\tdeviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
\tdeviceName         = AMD Radeon RX 7600 (RADV NAVI33)
"""
VULKAN_HEAD = "==========\nVULKANINFO\n==========\n\nDevices:\n========\n"


def standin(folder: Path, name: str, outputs: dict[str, str], default: str = "") -> Path:
    """An executable that prints outputs[its arguments] (else default), with shell builtins
    only, so that it needs nothing on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = "".join(
        f"  {shlex.quote(a)}) printf '%s' {shlex.quote(t)} ;;\n" for a, t in outputs.items()
    )
    script = folder / name
    script.write_text(
        f"#!/bin/sh\ncase \"$*\" in\n{cases}  *) printf '%s' {shlex.quote(default)} ;;\nesac\n"
    )
    script.chmod(0o755)
    return script


def nvidia(folder: Path, cuda: str = "13.0") -> None:
    standin(folder, "nvidia-smi", {"-L": SMI_LIST}, SMI_HEADER.format(driver="580.65", cuda=cuda))


def nvcc(folder: Path, cuda: str = "13.0") -> Path:
    return standin(folder, "nvcc", {"--version": NVCC_VERSION.format(cuda=cuda)})


def vulkan_sdk(root: Path, layer_settings: bool = True) -> Path:
    """A VULKAN_SDK folder with the headers the Vulkan build needs (or too old ones)."""
    (root / "include" / "vulkan").mkdir(parents=True)
    (root / "include" / "spirv" / "unified1").mkdir(parents=True)
    (root / "include" / "vulkan" / "vulkan.h").write_text('#include "vulkan_core.h"\n')
    core = "#define VK_HEADER_VERSION 296\n#define VK_EXT_layer_settings 1\n"
    (root / "include" / "vulkan" / "vulkan_core.h").write_text(
        core if layer_settings else "#define VK_HEADER_VERSION 239\n"
    )
    (root / "include" / "spirv" / "unified1" / "spirv.hpp").write_text("// spirv\n")
    return root


def run_script(*args: str, path: Path | str, **env: str) -> subprocess.CompletedProcess[str]:
    """daemon/backend.py as setup runs it, by an interpreter without site-packages (-S): it
    must need nothing but the standard library."""
    return subprocess.run(
        [sys.executable, "-S", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(path), **env},
        check=False,
    )


def test_cuda_with_driver_and_nvcc(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir)
    compiler = nvcc(bin_dir)
    decision = detect({"PATH": str(bin_dir)})
    assert decision.backend == "cuda"
    assert decision.cmake_args == [
        "-DGGML_CUDA=on",
        "-DGGML_RPC=on",
        f"-DCMAKE_CUDA_COMPILER={compiler}",
    ]
    assert decision.gpus == ["NVIDIA GeForce RTX 4060"]
    assert decision.tools["nvidia-smi"] == str(bin_dir / "nvidia-smi")
    assert decision.tools["nvcc"] == str(compiler)
    assert decision.problems == []
    assert "CUDA 13.0" in decision.why

    out = run_script("--dry-run", path=bin_dir)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "backend: cuda"
    assert lines[1].startswith("why: NVIDIA GeForce RTX 4060")
    assert lines[2] == f"CMAKE_ARGS: -DGGML_CUDA=on -DGGML_RPC=on -DCMAKE_CUDA_COMPILER={compiler}"


def test_cuda_home_nvcc(tmp_path: Path) -> None:
    """A toolkit that is not on PATH is found through CUDA_HOME."""
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir)
    compiler = nvcc(tmp_path / "cuda" / "bin")
    decision = detect({"PATH": str(bin_dir), "CUDA_HOME": str(tmp_path / "cuda")})
    assert decision.backend == "cuda"
    assert f"-DCMAKE_CUDA_COMPILER={compiler}" in decision.cmake_args


def test_nvidia_without_nvcc_and_pypi_disabled_builds_cpu_and_says_what_to_install(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir)
    env = {"PATH": str(bin_dir), "ASSISTANT_CUDA_FROM_PYPI": "0"}
    decision = detect(env)
    assert decision.backend == "cpu"
    assert decision.cmake_args == ["-DGGML_RPC=on"]
    assert decision.gpus == ["NVIDIA GeForce RTX 4060"]
    assert "CPU backend meanwhile" in decision.why
    (problem,) = decision.problems
    assert "nvcc" in problem.text
    assert "ASSISTANT_CUDA_FROM_PYPI" in problem.fix
    assert "install" in problem.fix and "cuda" in problem.fix
    assert not problem.blocking

    out = run_script("--dry-run", path=bin_dir, ASSISTANT_CUDA_FROM_PYPI="0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "backend: cpu"
    assert "CMAKE_ARGS: -DGGML_RPC=on" in out.stdout
    assert "note:" in out.stderr and "fix:" in out.stderr and "install" in out.stderr


def test_nvidia_without_nvcc_uses_the_toolkit_from_pypi(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir, cuda="13.0")
    site = tmp_path / "site-packages"
    decision = detect({"PATH": str(bin_dir)}, site_packages=str(site))
    root = site / "nvidia" / "cu13"
    assert decision.backend == "cuda"
    assert decision.toolkit_root == str(root)
    assert decision.cmake_args[:5] == [
        "-DGGML_CUDA=on",
        "-DGGML_RPC=on",
        f"-DCMAKE_CUDA_COMPILER={root}/bin/nvcc",
        f"-DCUDAToolkit_ROOT={root}",
        f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath,{root}/lib",
    ]
    # No newer than the driver's CUDA 13.0 where versions follow CUDA's.
    assert "nvidia-cuda-nvcc>=13,<13.1" in decision.pip_packages
    assert "nvidia-cuda-runtime>=13,<13.1" in decision.pip_packages
    assert "nvidia-cuda-crt>=13,<13.1" in decision.pip_packages
    assert "nvidia-cublas>=13,<14" in decision.pip_packages
    assert "nvidia-cuda-cccl>=13,<14" in decision.pip_packages

    venv = tmp_path / "venv"
    out = run_script("--json", "--venv", str(venv), "--version", "0.3.36", path=bin_dir)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["backend"] == "cuda"
    assert plan["toolkit_root"].startswith(str(venv))
    assert plan["toolkit_root"].endswith("site-packages/nvidia/cu13")
    assert plan["key"].startswith("0.3.36-cuda-")
    assert "-DGGML_CUDA=on -DGGML_RPC=on" in plan["CMAKE_ARGS"]

    shell = run_script("--shell", "--venv", str(venv), "--version", "0.3.36", path=bin_dir)
    assert "PIP_PACKAGES=('nvidia-cuda-nvcc>=13,<13.1'" in shell.stdout


def test_cuda_12_driver_without_nvcc_cannot_use_pypi(tmp_path: Path) -> None:
    """PyPI's CUDA 12 nvcc wheel carries no nvcc: such a driver needs a system toolkit."""
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir, cuda="12.4")
    decision = detect({"PATH": str(bin_dir)})
    assert decision.backend == "cpu"
    (problem,) = decision.problems
    assert "CUDA 12.4" in problem.text and "13" in problem.text
    assert "driver" in problem.fix


def test_nvcc_newer_than_the_driver_is_not_used(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir, cuda="12.4")
    nvcc(bin_dir, cuda="13.0")
    decision = detect({"PATH": str(bin_dir)})
    assert decision.backend == "cpu"
    assert any("newer than" in p.text for p in decision.problems)


def test_nvcc_without_a_driver_is_cpu(tmp_path: Path) -> None:
    """As on this machine: a toolkit, no GPU."""
    bin_dir = tmp_path / "bin"
    nvcc(bin_dir)
    decision = detect({"PATH": str(bin_dir)})
    assert decision.backend == "cpu"
    assert decision.problems == []
    assert decision.tools == {"nvcc": str(bin_dir / "nvcc")}


def vulkaninfo(folder: Path, *devices: str) -> None:
    text = VULKAN_HEAD + "".join(d.format(n=n) for n, d in enumerate(devices))
    standin(folder, "vulkaninfo", {"--summary": text})


def test_vulkan_with_a_discrete_gpu(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    vulkaninfo(bin_dir, LLVMPIPE, DISCRETE)
    standin(bin_dir, "glslc", {})
    sdk = vulkan_sdk(tmp_path / "sdk")
    decision = detect({"PATH": str(bin_dir), "VULKAN_SDK": str(sdk)})
    assert decision.backend == "vulkan"
    assert decision.cmake_args == ["-DGGML_VULKAN=on", "-DGGML_RPC=on"]
    assert decision.gpus == ["AMD Radeon RX 7600 (RADV NAVI33)"]
    assert decision.problems == []

    out = run_script("--dry-run", path=bin_dir, VULKAN_SDK=str(sdk))
    assert out.stdout.splitlines()[0] == "backend: vulkan"
    assert "CMAKE_ARGS: -DGGML_VULKAN=on -DGGML_RPC=on" in out.stdout


def test_llvmpipe_alone_is_no_gpu(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    vulkaninfo(bin_dir, LLVMPIPE)
    standin(bin_dir, "glslc", {})
    sdk = vulkan_sdk(tmp_path / "sdk")
    decision = detect({"PATH": str(bin_dir), "VULKAN_SDK": str(sdk)})
    assert decision.backend == "cpu"
    assert decision.gpus == []
    assert decision.problems == []
    assert "llvmpipe" in decision.why

    out = run_script("--dry-run", path=bin_dir, VULKAN_SDK=str(sdk))
    assert out.stdout.splitlines()[0] == "backend: cpu"
    assert "CMAKE_ARGS: -DGGML_RPC=on" in out.stdout


def test_vulkan_gpu_without_glslc_builds_cpu(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    vulkaninfo(bin_dir, DISCRETE)
    sdk = vulkan_sdk(tmp_path / "sdk")
    decision = detect({"PATH": str(bin_dir), "VULKAN_SDK": str(sdk)})
    assert decision.backend == "cpu"
    (problem,) = decision.problems
    assert "glslc" in problem.text
    assert "glslc" in problem.fix or "shaderc" in problem.fix


def test_vulkan_headers_too_old_for_llama_cpp(tmp_path: Path) -> None:
    """Debian 12's headers (1.3.239) lack VK_EXT_layer_settings, which the backend uses."""
    bin_dir = tmp_path / "bin"
    vulkaninfo(bin_dir, DISCRETE)
    standin(bin_dir, "glslc", {})
    sdk = vulkan_sdk(tmp_path / "sdk", layer_settings=False)
    decision = detect({"PATH": str(bin_dir), "VULKAN_SDK": str(sdk)})
    assert decision.backend == "cpu"
    (problem,) = decision.problems
    assert "VK_HEADER_VERSION 239" in problem.text
    assert "VULKAN_SDK" in problem.fix


def rocm(folder: Path, hipcc: bool = True) -> None:
    standin(folder, "rocminfo", {}, ROCMINFO)
    if hipcc:
        standin(folder, "hipcc", {})
        llvm = folder.parent / "rocm" / "llvm" / "bin"
        standin(llvm, "clang", {})
        standin(folder, "hipconfig", {"-l": f"{llvm}\n", "-R": f"{folder.parent / 'rocm'}\n"})


def test_hip_with_rocm(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    rocm(bin_dir)
    decision = detect({"PATH": str(bin_dir)})
    assert decision.backend == "hip"
    assert decision.cmake_args == ["-DGGML_HIP=on", "-DGGML_RPC=on", "-DGPU_TARGETS=gfx1100"]
    assert decision.gpus == ["AMD Radeon RX 7900 XTX (gfx1100)"]
    assert decision.env == {
        "HIPCXX": str(tmp_path / "rocm" / "llvm" / "bin" / "clang"),
        "HIP_PATH": str(tmp_path / "rocm"),
    }

    out = run_script("--dry-run", path=bin_dir)
    assert out.stdout.splitlines()[0] == "backend: hip"
    assert "CMAKE_ARGS: -DGGML_HIP=on -DGGML_RPC=on -DGPU_TARGETS=gfx1100" in out.stdout
    assert f"env: HIPCXX={tmp_path}/rocm/llvm/bin/clang" in out.stdout


def test_rocm_gpu_without_hipcc_builds_cpu(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    rocm(bin_dir, hipcc=False)
    decision = detect({"PATH": str(bin_dir)})
    assert decision.backend == "cpu"
    (problem,) = decision.problems
    assert "gfx1100" in problem.text and "hipcc" in problem.text
    assert "install" in problem.fix and ("rocm-hip" in problem.fix or "hipcc" in problem.fix)


def test_metal_on_apple_silicon(tmp_path: Path) -> None:
    decision = detect({"PATH": str(tmp_path)}, system="Darwin", machine="arm64")
    assert decision.backend == "metal"
    assert decision.cmake_args == ["-DGGML_METAL=on", "-DGGML_RPC=on"]
    assert detect({"PATH": str(tmp_path)}, system="Darwin", machine="x86_64").backend == "cpu"


def test_backend_flag_and_environment_override_detection(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir)
    nvcc(bin_dir)
    rocm(bin_dir)
    path = str(bin_dir)
    assert detect({"PATH": path}).backend == "cuda"
    forced = detect({"PATH": path, "ASSISTANT_BACKEND": "cpu"})
    assert (forced.backend, forced.cmake_args, forced.forced) == ("cpu", ["-DGGML_RPC=on"], True)
    assert detect({"PATH": path, "ASSISTANT_BACKEND": "hip"}).backend == "hip"
    # The flag beats the environment; `auto` asks for detection.
    assert detect({"PATH": path, "ASSISTANT_BACKEND": "cpu"}, backend="hip").backend == "hip"
    assert detect({"PATH": path, "ASSISTANT_BACKEND": "cpu"}, backend="auto").backend == "cuda"

    out = run_script("--dry-run", "--backend", "cpu", path=bin_dir, ASSISTANT_BACKEND="cuda")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == "backend: cpu"
    out = run_script("--dry-run", path=bin_dir, ASSISTANT_BACKEND="hip")
    assert out.stdout.splitlines()[0] == "backend: hip"


def test_unknown_backend_exits_2_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UnknownBackend, match="cuda, hip, vulkan, metal, cpu"):
        detect({"PATH": str(tmp_path)}, backend="tpu")
    for args, env in ((["--backend", "tpu"], {}), ([], {"ASSISTANT_BACKEND": "tpu"})):
        out = run_script("--dry-run", *args, path=tmp_path, **env)
        assert out.returncode == 2
        assert "unknown backend 'tpu'" in out.stderr
        assert ", ".join(BACKENDS) in out.stderr
        assert out.stdout == ""


def test_a_backend_asked_for_that_cannot_be_built_exits_2(tmp_path: Path) -> None:
    out = run_script("--dry-run", "--backend", "hip", path=tmp_path)
    assert out.returncode == 2
    assert "error: HIP asked for but hipcc is missing" in out.stderr
    out = run_script("--dry-run", "--backend", "metal", path=tmp_path)
    assert out.returncode == (0 if platform.system() == "Darwin" else 2)


def test_wheel_key_follows_the_cmake_args(tmp_path: Path) -> None:
    """A CPU wheel and a CUDA wheel of one version never share a cache folder."""
    cpu = detect({"PATH": str(tmp_path)}, backend="cpu")
    assert cpu.cmake_args_string == "-DGGML_RPC=on"
    digest = hashlib.sha256(b"-DGGML_RPC=on").hexdigest()[:8]
    assert cpu.key("0.3.36") == f"0.3.36-cpu-{digest}"
    nvcc(tmp_path)
    cuda = detect({"PATH": str(tmp_path)}, backend="cuda")
    assert cuda.key("0.3.36").startswith("0.3.36-cuda-")
    assert cuda.key("0.3.36")[-8:] != digest


def test_json_has_what_doctor_reads(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir)
    out = run_script("--json", path=bin_dir, ASSISTANT_CUDA_FROM_PYPI="0")
    plan = json.loads(out.stdout)
    assert plan["backend"] == "cpu"
    assert plan["cmake_args"] == ["-DGGML_RPC=on"]
    assert plan["gpus"] == ["NVIDIA GeForce RTX 4060"]
    assert plan["tools"] == {"nvidia-smi": str(bin_dir / "nvidia-smi")}
    (problem,) = plan["problems"]
    assert set(problem) == {"text", "fix", "blocking"}
    assert plan["why"]


def test_link_toolkit_makes_wheels_look_like_a_toolkit(tmp_path: Path) -> None:
    """nvcc.profile reads lib64; FindCUDAToolkit wants unversioned .so names."""
    lib = tmp_path / "cu13" / "lib"
    lib.mkdir(parents=True)
    for name in ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"):
        (lib / name).write_bytes(b"")
    made = link_toolkit(tmp_path / "cu13")
    assert {p.name for p in made} == {"lib64", "libcudart.so", "libcublas.so", "libcublasLt.so"}
    assert os.readlink(lib / "libcudart.so") == "libcudart.so.13"
    assert (tmp_path / "cu13" / "lib64" / "libcublas.so").exists()
    assert link_toolkit(tmp_path / "cu13") == []


def test_setup_script_parses() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "setup.sh")], check=True)


def test_setup_dry_run_builds_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    nvidia(bin_dir)
    compiler = nvcc(bin_dir)
    standin(bin_dir, "c++", {})  # before /usr/bin's: a compiler without AMX
    cache = tmp_path / "cache"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(cache),
        "PYTHON": sys.executable,
    }
    setup = str(ROOT / "scripts" / "setup.sh")
    out = subprocess.run(
        [setup, "--dry-run"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "backend: cuda"
    assert lines[2] == f"CMAKE_ARGS: -DGGML_CUDA=on -DGGML_RPC=on -DCMAKE_CUDA_COMPILER={compiler}"
    assert lines[-1].startswith(f"wheel: {cache}/assistantd/wheels/0.3.36-cuda-")
    assert "not built yet" in lines[-1]
    assert not cache.exists()

    out = subprocess.run(
        [setup, "--dry-run", "--backend", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.stdout.splitlines()[:3] == [
        "backend: cpu",
        "why: cpu asked for",
        "CMAKE_ARGS: -DGGML_RPC=on",
    ]
    for args, extra in ((["--backend", "tpu"], {}), ([], {"ASSISTANT_BACKEND": "tpu"})):
        out = subprocess.run(
            [setup, "--dry-run", *args],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=60,
            check=False,
        )
        assert out.returncode == 2
        assert "unknown backend 'tpu'" in out.stderr


def _gpu_tools_here() -> list[str]:
    return [t for t in ("nvidia-smi", "rocminfo", "vulkaninfo") if shutil.which(t)]


def test_this_machine_builds_the_rpc_cpu_backend() -> None:
    """No GPU here (an nvcc, but no driver): the CPU backend with RPC, as the cached wheel."""
    if _gpu_tools_here() or (platform.system(), platform.machine()) == ("Darwin", "arm64"):
        pytest.skip(f"this machine may have a GPU: {_gpu_tools_here() or 'Apple silicon'}")
    decision = detect()
    assert decision.backend == "cpu"
    amx = _native_amx_here()
    assert decision.cmake_args == ["-DGGML_RPC=on", *(NO_AMX_ARGS if amx else [])]
    out = subprocess.run(
        [sys.executable, "-S", str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "backend: cpu",
        f"why: {decision.why}",
        f"CMAKE_ARGS: {decision.cmake_args_string}",
    ]
    if amx:  # the wheel setup installed was built from this decision: no AMX kernels
        assert "AMX_INT8 = 1" not in llama_cpp.llama_print_system_info().decode()


def _native_amx_here() -> bool:
    cxx = shutil.which("c++")
    if not cxx:
        return False
    out = subprocess.run(
        [cxx, "-march=native", "-dM", "-E", "-x", "c++", os.devnull],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return "__AMX_INT8__" in out.stdout


NO_AMX_ARGS = [
    "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
]
NATIVE_MACROS = "-march=native -dM -E -x c++ /dev/null"


def test_a_compiler_with_amx_builds_without_llamas_amx_kernels(tmp_path: Path) -> None:
    """A Sapphire Rapids CPU: -march=native would compile llama.cpp's AMX kernels, which crash
    on the first prompt in this llama.cpp, so the build turns them off (the stand-in c++ prints
    what GCC 12 prints there), and the wheel gets a cache folder of its own."""
    bin_dir = tmp_path / "bin"
    standin(bin_dir, "c++", {NATIVE_MACROS: "#define __AVX512F__ 1\n#define __AMX_INT8__ 1\n"})
    decision = detect({"PATH": str(bin_dir)})
    assert decision.backend == "cpu"
    assert decision.cmake_args == ["-DGGML_RPC=on", *NO_AMX_ARGS]
    assert "AMX" in decision.why and "26954" in decision.why
    plain = tmp_path / "plain"
    standin(plain, "c++", {NATIVE_MACROS: "#define __AVX512F__ 1\n"})
    without = detect({"PATH": str(plain)})
    assert without.cmake_args == ["-DGGML_RPC=on"]
    assert without.key("0.3.36") != decision.key("0.3.36")
    # $CXX is the compiler CMake uses when set; with a GPU backend too (its CPU part has them).
    nvidia(plain)
    nvcc(plain)
    cuda = detect({"PATH": str(plain), "CXX": str(bin_dir / "c++")})
    assert cuda.backend == "cuda"
    assert cuda.cmake_args[-2:] == NO_AMX_ARGS
    # As setup reads it: CMAKE_ARGS split like a shell gives the flags whole.
    out = run_script("--shell", "--version", "0.3.36", path=bin_dir)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("CMAKE_ARGS="))
    assert shlex.split(shlex.split(line.partition("=")[2])[0]) == ["-DGGML_RPC=on", *NO_AMX_ARGS]
