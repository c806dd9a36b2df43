"""What the drivers and tools on PATH say, per vendor: NVIDIA (CUDA, the system's nvcc or the
toolkit from PyPI), AMD (ROCm/HIP) and Vulkan, and the install command for whatever a GPU build
lacks on this distribution.

Each probe reads the OS and runs read-only tools (nvidia-smi, nvcc, rocminfo, hipcc, hipconfig,
vulkaninfo, glslc) through a Probe, which collects the GPUs, tools and problems seen; it changes
nothing. Part of daemon/backend.py, which scripts/setup.sh runs as a plain file before the
package is installed: standard library only.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Imported as assistantd.backend_probes, or as the top-level module backend_probes when
# daemon/backend.py runs as a file (its folder, daemon/, is then sys.path[0]).
if __package__:
    from assistantd.backend_decision import RPC, Decision, Problem
else:
    from backend_decision import RPC, Decision, Problem  # type: ignore[no-redef]

TOOL_TIMEOUT_S = 15.0
# PyPI carries nvcc itself only from CUDA 13 on (nvidia-cuda-nvcc-cu12 has ptxas and NVVM but
# no nvcc), as unsuffixed packages that install under site-packages/nvidia/cu13.
PYPI_CUDA_MIN_MAJOR = 13
SYSTEM_INCLUDE = Path("/usr/include")
# llama.cpp's AMX kernels (ggml-cpu/amx) crash on the first prompt batch in the llama.cpp that
# llama-cpp-python 0.3.36 vendors: a general protection fault at `ldtilecfg` in
# ggml_backend_amx_mul_mat (its tile config, on the stack, is optimised away, and worker threads
# never ask the kernel for tile data; ggml-org/llama.cpp#26954, open). They are compiled in when
# the compiler's -march=native has AMX (Sapphire Rapids and later Xeons, common in clouds), so
# such builds leave them out; the AVX-512 kernels serve instead.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
OS_RELEASE = Path("/etc/os-release")
# Where a driver's libcuda.so.1 lives when no unversioned libcuda.so (toolkit stub) exists.
DRIVER_LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib/wsl/lib",
    "/usr/lib",
)

# Package names per package manager for what a GPU build needs.
_PACKAGES: dict[str, dict[str, str]] = {
    "cuda": {"apt": "nvidia-cuda-toolkit", "dnf": "cuda-toolkit", "pacman": "cuda"},
    "hipcc": {"apt": "rocm-hip-sdk", "dnf": "rocm-hip-devel hipcc", "pacman": "rocm-hip-sdk"},
    "rocminfo": {"apt": "rocminfo", "dnf": "rocminfo", "pacman": "rocminfo"},
    "glslc": {"apt": "glslc", "dnf": "glslc", "pacman": "shaderc"},
    "vulkan-headers": {
        "apt": "libvulkan-dev",
        "dnf": "vulkan-headers vulkan-loader-devel",
        "pacman": "vulkan-headers vulkan-icd-loader",
    },
    "spirv-headers": {
        "apt": "spirv-headers",
        "dnf": "spirv-headers-devel",
        "pacman": "spirv-headers",
    },
}
_INSTALL = {"apt": "sudo apt install", "dnf": "sudo dnf install", "pacman": "sudo pacman -S"}


@dataclass
class Probe:
    """The inputs detection reads: environment, PATH, OS, and where CUDA wheels would land."""

    env: Mapping[str, str]
    path: str
    system: str
    machine: str
    site_packages: str
    tools: dict[str, str] = field(default_factory=dict)
    gpus: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    cpu_devices: list[str] = field(default_factory=list)  # Vulkan devices of type CPU

    def which(self, name: str) -> str | None:
        found = shutil.which(name, path=self.path)
        if found:
            self.tools[name] = found
        return found

    def run(self, exe: str, *args: str) -> str | None:
        """stdout of a tool, or None when it fails: a broken tool counts as no tool."""
        try:
            proc = subprocess.run(
                [exe, *args],
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT_S,
                env={**self.env, "PATH": self.path},
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout if proc.returncode == 0 else None

    def install(self, *what: str) -> str:
        return install_command(what, self.system)

    def native_amx(self) -> bool:
        """Whether the C++ compiler CMake will use ($CXX, else c++) compiles AMX code for
        -march=native, as llama.cpp's CPU backend builds by default."""
        compiler = shlex.split(self.env.get("CXX", "")) or [self.which("c++") or ""]
        if not compiler[0]:
            return False
        macros = self.run(*compiler, "-march=native", "-dM", "-E", "-x", "c++", os.devnull)
        return macros is not None and "__AMX_INT8__" in macros


def package_manager(system: str | None = None) -> str | None:
    """apt, dnf or pacman from /etc/os-release; brew on macOS; None when unknown."""
    if (system or platform.system()) == "Darwin":
        return "brew"
    try:
        text = OS_RELEASE.read_text()
    except OSError:
        return None
    ids: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids.update(value.strip().strip('"').split())
    if ids & {"debian", "ubuntu"}:
        return "apt"
    if ids & {"fedora", "rhel", "centos"}:
        return "dnf"
    if ids & {"arch"}:
        return "pacman"
    return None


def install_command(what: Sequence[str], system: str | None = None) -> str:
    """The install command for `what` (keys of _PACKAGES) on this distribution."""
    manager = package_manager(system)
    if manager in _INSTALL:
        return f"{_INSTALL[manager]} " + " ".join(_PACKAGES[w][manager] for w in what)
    apt = " ".join(_PACKAGES[w]["apt"] for w in what)
    dnf = " ".join(_PACKAGES[w]["dnf"] for w in what)
    return f"sudo apt install {apt} (Debian/Ubuntu) or sudo dnf install {dnf} (Fedora)"


def _version(text: str | None, pattern: str) -> tuple[int, int] | None:
    match = re.search(pattern, text or "")
    return (int(match[1]), int(match[2])) if match else None


def _pypi_disabled(env: Mapping[str, str]) -> bool:
    return env.get("ASSISTANT_CUDA_FROM_PYPI", "1").strip().lower() in ("0", "false", "no", "off")


# --- CUDA ---------------------------------------------------------------------------------


def nvidia(p: Probe) -> tuple[int, int] | None:
    """NVIDIA GPUs the driver lists (into p.gpus) and the CUDA version the driver supports."""
    smi = p.which("nvidia-smi")
    if not smi:
        return None
    listed = p.run(smi, "-L") or ""
    names = re.findall(r"^GPU \d+: (.+?)(?: \(UUID:.*)?$", listed, re.M)
    p.gpus.extend(names)
    return _version(p.run(smi), r"CUDA Version:\s*(\d+)\.(\d+)") if names else None


def system_nvcc(p: Probe) -> str | None:
    nvcc = p.which("nvcc")
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if not nvcc and p.env.get(var):
            candidate = Path(p.env[var]) / "bin" / "nvcc"
            if os.access(candidate, os.X_OK):
                nvcc = p.tools["nvcc"] = str(candidate)
    return nvcc


def _driver_lib() -> str | None:
    """libcuda.so.1 when the system has no unversioned libcuda.so for CMake to find."""
    for folder in DRIVER_LIB_DIRS:
        if Path(folder, "libcuda.so").exists():
            return None
    for folder in DRIVER_LIB_DIRS:
        if Path(folder, "libcuda.so.1").exists():
            return str(Path(folder, "libcuda.so.1"))
    return None


def cuda(p: Probe, driver: tuple[int, int] | None, forced: bool) -> Decision | None:
    """A CUDA build: the system nvcc if it suits the driver, else the toolkit from PyPI."""
    driver_text = f"driver for CUDA {driver[0]}.{driver[1]}" if driver else "no driver version"
    gpu = ", ".join(p.gpus) if p.gpus else "CUDA asked for"
    if not p.gpus:
        driver_text = "no NVIDIA driver seen"
    nvcc = system_nvcc(p)
    if nvcc:
        output = p.run(nvcc, "--version")
        release = _version(output, r"release (\d+)\.(\d+)")
        if output is None:
            p.problems.append(Problem(f"nvcc at {nvcc} does not run", p.install("cuda")))
        elif release and driver and release[0] > driver[0]:
            p.problems.append(
                Problem(
                    f"nvcc {release[0]}.{release[1]} at {nvcc} is newer than the NVIDIA "
                    f"{driver_text}",
                    "upgrade the NVIDIA driver, or install a CUDA toolkit no newer than "
                    f"{driver[0]}.{driver[1]}: {p.install('cuda')}",
                )
            )
        else:
            version = f"nvcc {release[0]}.{release[1]}" if release else "nvcc"
            return Decision(
                "cuda",
                f"{gpu} ({driver_text}); {version} at {nvcc}",
                ["-DGGML_CUDA=on", RPC, f"-DCMAKE_CUDA_COMPILER={nvcc}"],
            )
    major = driver[0] if driver else PYPI_CUDA_MIN_MAJOR
    toolkit = f"{p.install('cuda')} (or https://developer.nvidia.com/cuda-downloads)"
    if _pypi_disabled(p.env):
        p.problems.append(
            Problem(
                f"{gpu} but no CUDA compiler (nvcc), and ASSISTANT_CUDA_FROM_PYPI=0 keeps "
                "setup from installing the toolkit from PyPI",
                f"unset ASSISTANT_CUDA_FROM_PYPI, or {toolkit}",
                blocking=forced,
            )
        )
        return None
    if major < PYPI_CUDA_MIN_MAJOR:
        p.problems.append(
            Problem(
                f"{gpu} ({driver_text}) but no CUDA compiler (nvcc); PyPI ships nvcc only for "
                f"CUDA {PYPI_CUDA_MIN_MAJOR}+, which needs a newer driver",
                f"{toolkit}, or upgrade the NVIDIA driver to one for CUDA {PYPI_CUDA_MIN_MAJOR}",
                blocking=forced,
            )
        )
        return None
    return _pypi_cuda(p, major, driver, f"{gpu} ({driver_text}); no system nvcc")


def _pypi_cuda(p: Probe, major: int, driver: tuple[int, int] | None, why: str) -> Decision:
    """nvcc, cudart, cuBLAS and headers from NVIDIA's PyPI wheels, no newer than the driver."""
    root = Path(p.site_packages) / "nvidia" / f"cu{major}"
    # Compiler and runtime share CUDA's version numbers: stay within the driver's minor.
    upto = f"<{major}.{driver[1] + 1}" if driver else f"<{major + 1}"
    exact = ["nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cuda-crt", "nvidia-nvvm"]
    packages = [f"{name}>={major},{upto}" for name in exact]
    packages += [f"{name}>={major},<{major + 1}" for name in ("nvidia-cublas", "nvidia-cuda-cccl")]
    args = [
        "-DGGML_CUDA=on",
        RPC,
        f"-DCMAKE_CUDA_COMPILER={root / 'bin' / 'nvcc'}",
        f"-DCUDAToolkit_ROOT={root}",
        # The wheels' libraries are not on the loader's path: record where they are.
        f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath,{root / 'lib'}",
    ]
    if driver_lib := _driver_lib():
        args.append(f"-DCUDA_cuda_driver_LIBRARY={driver_lib}")
    return Decision(
        "cuda",
        f"{why}: the CUDA {major} toolkit comes from PyPI into {root}",
        args,
        pip_packages=packages,
        toolkit_root=str(root),
    )


# --- ROCm / HIP ---------------------------------------------------------------------------


def rocm_targets(p: Probe) -> list[str]:
    """gfx targets of the GPU agents rocminfo lists (into p.gpus)."""
    rocminfo = p.which("rocminfo")
    if not rocminfo:
        return []
    targets: list[str] = []
    for agent in re.split(r"^\*+\s*\n\s*Agent \d+", p.run(rocminfo) or "", flags=re.M)[1:]:
        name = re.search(r"^\s*Name:\s*(gfx[0-9a-f]+)\s*$", agent, re.M)
        if not name:
            continue
        marketing = re.search(r"^\s*Marketing Name:\s*(.+?)\s*$", agent, re.M)
        p.gpus.append(f"{marketing[1] if marketing else 'AMD GPU'} ({name[1]})")
        if name[1] not in targets:
            targets.append(name[1])
    return targets


def hip(p: Probe, targets: list[str], forced: bool) -> Decision | None:
    """A HIP build with the compiler llama.cpp's docs name: `$(hipconfig -l)/clang`."""
    hipcc = p.which("hipcc")
    if not hipcc:
        seen = f"ROCm lists {', '.join(p.gpus)}" if p.gpus else "HIP asked for"
        p.problems.append(Problem(f"{seen} but hipcc is missing", p.install("hipcc"), forced))
        return None
    env: dict[str, str] = {}
    hipconfig = p.which("hipconfig")
    llvm_bin = (p.run(hipconfig, "-l") or "").strip() if hipconfig else ""
    rocm = (p.run(hipconfig, "-R") or "").strip() if hipconfig else ""
    if not rocm:
        rocm = str(Path(os.path.realpath(hipcc)).parent.parent)
    if not llvm_bin:
        llvm_bin = str(Path(rocm) / "llvm" / "bin")
    if os.access(Path(llvm_bin) / "clang", os.X_OK):
        env["HIPCXX"] = str(Path(llvm_bin) / "clang")
    if Path(rocm).is_dir():
        env["HIP_PATH"] = rocm
    args = ["-DGGML_HIP=on", RPC]
    if targets:  # GPU_TARGETS (AMDGPU_TARGETS is its older name); none: all of ROCm's
        args.append(f"-DGPU_TARGETS={';'.join(targets)}")
    gpus = ", ".join(p.gpus) if p.gpus else "HIP asked for"
    return Decision("hip", f"{gpus}; hipcc at {hipcc}", args, env=env)


# --- Vulkan -------------------------------------------------------------------------------


def vulkan_gpus(p: Probe) -> list[str]:
    """Vulkan devices that are not CPUs (llvmpipe is a Vulkan device of type CPU)."""
    vulkaninfo = p.which("vulkaninfo")
    if not vulkaninfo:
        return []
    devices: list[dict[str, str]] = []
    for line in (p.run(vulkaninfo, "--summary") or "").splitlines():
        if re.match(r"^GPU\d+:\s*$", line):
            devices.append({})
        elif devices and "=" in line:
            key, _, value = line.partition("=")
            devices[-1][key.strip()] = value.strip()
    gpus: list[str] = []
    for device in devices:
        name = device.get("deviceName", "Vulkan device")
        cpu = device.get("deviceType", "") == "PHYSICAL_DEVICE_TYPE_CPU"
        (p.cpu_devices if cpu else gpus).append(name)
    p.gpus.extend(gpus)
    return gpus


def vulkan(p: Probe, gpus: list[str], forced: bool) -> Decision | None:
    """A Vulkan build needs glslc, Vulkan headers new enough, and SPIRV-Headers."""
    seen = f"Vulkan lists {', '.join(gpus)}" if gpus else "Vulkan asked for"
    glslc = p.which("glslc")
    include = SYSTEM_INCLUDE
    if p.env.get("VULKAN_SDK"):
        include = Path(p.env["VULKAN_SDK"]) / "include"
    missing: list[str] = []
    if not glslc:
        missing.append("glslc")
    if not (include / "vulkan" / "vulkan.h").is_file():
        missing.append("vulkan-headers")
    if not (include / "spirv" / "unified1" / "spirv.hpp").is_file():
        missing.append("spirv-headers")
    if missing:
        names = {
            "glslc": "glslc",
            "vulkan-headers": f"Vulkan headers ({include}/vulkan)",
            "spirv-headers": f"SPIRV-Headers ({include}/spirv)",
        }
        p.problems.append(
            Problem(
                f"{seen} but {', '.join(names[m] for m in missing)} missing",
                f"{p.install(*missing)}, or the LunarG Vulkan SDK with VULKAN_SDK set",
                forced,
            )
        )
        return None
    core = include / "vulkan" / "vulkan_core.h"
    try:
        header = core.read_text(errors="replace")
    except OSError:
        header = ""
    if "VK_EXT_layer_settings" not in header:
        version = re.search(r"#define VK_HEADER_VERSION (\d+)", header)
        p.problems.append(
            Problem(
                f"{seen} but the Vulkan headers in {include}"
                f"{f' (VK_HEADER_VERSION {version[1]})' if version else ''} are older than "
                "llama.cpp's Vulkan backend needs (VK_EXT_layer_settings)",
                "install the LunarG Vulkan SDK (https://vulkan.lunarg.com/sdk/home) and set "
                "VULKAN_SDK",
                forced,
            )
        )
        return None
    return Decision("vulkan", f"{seen}; glslc at {glslc}", ["-DGGML_VULKAN=on", RPC])
