"""Which llama.cpp backend to build llama-cpp-python for on this machine, and how.

scripts/setup.sh runs this file as `python3 daemon/backend.py` before the package is installed,
and `assistantctl doctor` imports it as `assistantd.backend`: so it imports the standard library
only. Detection reads the OS and the tools on PATH (nvidia-smi, nvcc, rocminfo, hipcc,
vulkaninfo, glslc) and changes nothing, so tests can put stand-in executables on a temporary PATH.

Every build has GGML_RPC on: remote devices work whatever the local backend. A GPU whose backend
cannot be built here is reported with the one command that fixes it, and the CPU backend is built
meanwhile (running setup again after the fix builds the GPU one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BACKENDS = ("cuda", "hip", "vulkan", "metal", "cpu")
RPC = "-DGGML_RPC=on"
TOOL_TIMEOUT_S = 15.0
# PyPI carries nvcc itself only from CUDA 13 on (nvidia-cuda-nvcc-cu12 has ptxas and NVVM but
# no nvcc), as unsuffixed packages that install under site-packages/nvidia/cu13.
PYPI_CUDA_MIN_MAJOR = 13
SYSTEM_INCLUDE = Path("/usr/include")
TOOLS = ("nvidia-smi", "nvcc", "rocminfo", "hipcc", "hipconfig", "vulkaninfo", "glslc")
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


class UnknownBackend(ValueError):
    """A backend name that is none of BACKENDS (nor `auto`)."""


@dataclass(frozen=True)
class Problem:
    """Something that keeps a GPU backend from being built, and the command that fixes it."""

    text: str
    fix: str
    blocking: bool = False  # True: the backend asked for by name cannot be built


@dataclass
class Decision:
    """The backend to build and everything the build needs."""

    backend: str
    why: str
    cmake_args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the build's environment
    gpus: list[str] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)  # name → path, as found
    problems: list[Problem] = field(default_factory=list)
    forced: bool = False  # named by --backend or ASSISTANT_BACKEND
    # CUDA from PyPI: wheels to install into the build's environment first, and their root.
    pip_packages: list[str] = field(default_factory=list)
    toolkit_root: str | None = None

    @property
    def cmake_args_string(self) -> str:
        """CMAKE_ARGS as scikit-build-core reads it (split like a shell)."""
        return shlex.join(self.cmake_args)

    @property
    def ok(self) -> bool:
        return not any(p.blocking for p in self.problems)

    def key(self, version: str) -> str:
        """`<version>-<backend>-<hash8>`: a wheel folder name that differs whenever the build
        would. pip caches wheels by version alone, so it would hand a CPU wheel to a CUDA
        request; this key keeps them apart."""
        text = self.cmake_args_string
        if self.env:
            text += "\n" + "\n".join(f"{k}={v}" for k, v in sorted(self.env.items()))
        return f"{version}-{self.backend}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    def as_json(self, version: str | None = None) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        out["CMAKE_ARGS"] = self.cmake_args_string
        out["ok"] = self.ok
        if version:
            out["key"] = self.key(version)
        return out


@dataclass
class _Probe:
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


def _nvidia(p: _Probe) -> tuple[int, int] | None:
    """NVIDIA GPUs the driver lists (into p.gpus) and the CUDA version the driver supports."""
    smi = p.which("nvidia-smi")
    if not smi:
        return None
    listed = p.run(smi, "-L") or ""
    names = re.findall(r"^GPU \d+: (.+?)(?: \(UUID:.*)?$", listed, re.M)
    p.gpus.extend(names)
    return _version(p.run(smi), r"CUDA Version:\s*(\d+)\.(\d+)") if names else None


def _system_nvcc(p: _Probe) -> str | None:
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


def _cuda(p: _Probe, driver: tuple[int, int] | None, forced: bool) -> Decision | None:
    """A CUDA build: the system nvcc if it suits the driver, else the toolkit from PyPI."""
    driver_text = f"driver for CUDA {driver[0]}.{driver[1]}" if driver else "no driver version"
    gpu = ", ".join(p.gpus) if p.gpus else "CUDA asked for"
    if not p.gpus:
        driver_text = "no NVIDIA driver seen"
    nvcc = _system_nvcc(p)
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


def _pypi_cuda(p: _Probe, major: int, driver: tuple[int, int] | None, why: str) -> Decision:
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


def _rocm_targets(p: _Probe) -> list[str]:
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


def _hip(p: _Probe, targets: list[str], forced: bool) -> Decision | None:
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


def _vulkan_gpus(p: _Probe) -> list[str]:
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


def _vulkan(p: _Probe, gpus: list[str], forced: bool) -> Decision | None:
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


# --- detection ----------------------------------------------------------------------------


def requested_backend(env: Mapping[str, str], flag: str | None = None) -> str | None:
    """The backend named by --backend or ASSISTANT_BACKEND (the flag wins); None for auto."""
    source = "--backend" if flag else "ASSISTANT_BACKEND"
    name = (flag if flag else env.get("ASSISTANT_BACKEND", "")).strip().lower()
    if name in ("", "auto"):
        return None
    if name not in BACKENDS:
        raise UnknownBackend(
            f"unknown backend {name!r} (from {source}): choose one of {', '.join(BACKENDS)}, "
            "or auto"
        )
    return name


def detect(
    env: Mapping[str, str] | None = None,
    path: str | None = None,
    *,
    backend: str | None = None,
    system: str | None = None,
    machine: str | None = None,
    site_packages: str | None = None,
) -> Decision:
    """Decide the backend for this machine. Reads, runs read-only tools, changes nothing.

    `backend` (else env's ASSISTANT_BACKEND) forces one; UnknownBackend when it is no backend.
    `site_packages` is where the CUDA wheels would be installed (default: this interpreter's).
    """
    env = os.environ if env is None else env
    p = _Probe(
        env=env,
        path=env.get("PATH", os.defpath) if path is None else path,
        system=system or platform.system(),
        machine=machine or platform.machine(),
        site_packages=site_packages or sysconfig.get_paths()["purelib"],
    )
    forced = requested_backend(env, backend)
    decision = _forced(p, forced) if forced else _auto(p)
    for tool in TOOLS:  # everything relevant that is installed, for `assistantctl doctor`
        if tool == "nvcc" and tool not in p.tools:
            _system_nvcc(p)
        elif tool not in p.tools:
            p.which(tool)
    decision.forced = forced is not None
    decision.gpus = list(dict.fromkeys(p.gpus))  # Vulkan may list a CUDA GPU again
    decision.tools = p.tools
    decision.problems = p.problems
    return decision


def _forced(p: _Probe, name: str) -> Decision:
    """The named backend, with blocking problems when this machine cannot build it."""
    blocked = Decision(name, f"{name} asked for, but it cannot be built here", [RPC])
    if name == "cuda":
        driver = _nvidia(p)
        return _cuda(p, driver, forced=True) or blocked
    if name == "hip":
        return _hip(p, _rocm_targets(p), forced=True) or blocked
    if name == "vulkan":
        return _vulkan(p, _vulkan_gpus(p), forced=True) or blocked
    if name == "metal":
        if p.system != "Darwin":
            p.problems.append(Problem("Metal exists only on macOS", "choose another backend", True))
            return blocked
        return Decision("metal", "Metal asked for", ["-DGGML_METAL=on", RPC])
    return Decision("cpu", "cpu asked for", [RPC])


def _auto(p: _Probe) -> Decision:
    """The first GPU backend this machine has a GPU for and can build, else the CPU."""
    driver = _nvidia(p)
    if p.gpus and (decision := _cuda(p, driver, forced=False)):
        return decision
    targets = _rocm_targets(p)
    if targets and (decision := _hip(p, targets, forced=False)):
        return decision
    if not targets and p.which("hipcc") and "rocminfo" not in p.tools:
        p.problems.append(
            Problem(
                "hipcc is installed but rocminfo is not, so no AMD GPU can be seen",
                p.install("rocminfo"),
            )
        )
    vulkan = _vulkan_gpus(p)
    if vulkan and (decision := _vulkan(p, vulkan, forced=False)):
        return decision
    if p.system == "Darwin" and p.machine == "arm64":
        return Decision("metal", "macOS on Apple silicon", ["-DGGML_METAL=on", RPC])
    if p.problems:
        why = (
            f"a GPU ({', '.join(p.gpus) or 'see below'}) was found but no GPU backend can be "
            "built here yet: building the CPU backend meanwhile; after the fix below, run "
            "scripts/setup.sh again"
        )
    else:
        looked = "nvidia-smi, rocminfo and vulkaninfo list no GPU"
        if p.cpu_devices:
            looked = f"Vulkan lists only CPU devices ({', '.join(p.cpu_devices)})"
        if p.system == "Darwin":
            looked = "an Intel Mac"
        why = f"no GPU: {looked}"
    return Decision("cpu", why, [RPC])


def link_toolkit(root: Path) -> list[Path]:
    """Make a CUDA toolkit from PyPI wheels look like an installed one: nvcc.profile reads
    lib64, and CMake's FindCUDAToolkit looks for unversioned libcudart.so, libcublas.so …
    (wheels carry only libcudart.so.13). Returns the links made."""
    made: list[Path] = []
    lib = root / "lib"
    if not (root / "lib64").exists() and lib.is_dir():
        (root / "lib64").symlink_to("lib")
        made.append(root / "lib64")
    for versioned in sorted(lib.glob("lib*.so.*")) if lib.is_dir() else []:
        plain = lib / (versioned.name.split(".so.")[0] + ".so")
        if not plain.exists() and not plain.is_symlink():
            plain.symlink_to(versioned.name)
            made.append(plain)
    return made


def build_time_hint(backend: str, cores: int | None = None) -> str:
    """A rough figure for the first build: about 6-10 minutes on 2 cores for the CPU."""
    cores = cores or os.cpu_count() or 1
    factor = {"cuda": 4.0, "hip": 4.0, "vulkan": 2.0}.get(backend, 1.0)
    low, high = (max(1, round(work * factor / cores)) for work in (12, 20))
    return f"about {low}-{high} minutes on {cores} cores"


# --- command line -------------------------------------------------------------------------


def _describe(decision: Decision) -> str:
    lines = [
        f"backend: {decision.backend}",
        f"why: {decision.why}",
        f"CMAKE_ARGS: {decision.cmake_args_string}",
    ]
    lines += [f"env: {k}={v}" for k, v in decision.env.items()]
    if decision.pip_packages:
        lines.append(f"pip install first: {' '.join(decision.pip_packages)}")
    return "\n".join(lines)


def _problems(decision: Decision) -> str:
    lines = []
    for problem in decision.problems:
        lines.append(f"{'error' if problem.blocking else 'note'}: {problem.text}")
        lines.append(f"  fix: {problem.fix}")
    return "\n".join(lines)


def _shell(decision: Decision, version: str) -> str:
    """Assignments for scripts/setup.sh to eval; every value shell-quoted."""
    values = {
        "BACKEND": decision.backend,
        "WHY": decision.why,
        "CMAKE_ARGS": decision.cmake_args_string,
        "KEY": decision.key(version),
        "HINT": build_time_hint(decision.backend),
        "TOOLKIT_ROOT": decision.toolkit_root or "",
    }
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    build_env = " ".join(shlex.quote(f"{k}={v}") for k, v in decision.env.items())
    lines.append(f"BUILD_ENV=({build_env})")
    lines.append(f"PIP_PACKAGES=({' '.join(shlex.quote(x) for x in decision.pip_packages)})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="backend.py", description="Choose the llama.cpp backend to build llama-cpp-python for."
    )
    parser.add_argument(
        "--backend",
        help=f"one of {', '.join(BACKENDS)}, auto (default: ASSISTANT_BACKEND, else auto)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the decision (the default)")
    mode.add_argument("--json", action="store_true", help="print the decision as JSON")
    mode.add_argument("--shell", action="store_true", help="print assignments for setup.sh")
    mode.add_argument("--link-toolkit", metavar="ROOT", help="link a PyPI CUDA toolkit's libs")
    mode.add_argument("--check", action="store_true", help="only check the backend's name")
    parser.add_argument("--venv", help="the virtualenv the build installs into")
    parser.add_argument("--version", help="llama-cpp-python version (for the wheel key)")
    args = parser.parse_args(argv)

    if args.link_toolkit:
        for link in link_toolkit(Path(args.link_toolkit)):
            print(f"linked {link}")
        return 0
    site = None
    if args.venv:
        scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
        base = os.path.abspath(args.venv)
        site = sysconfig.get_path("purelib", scheme, {"base": base, "platbase": base})
    try:
        if args.check:
            requested_backend(os.environ, args.backend)
            return 0
        decision = detect(backend=args.backend, site_packages=site)
    except UnknownBackend as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(decision.as_json(args.version), indent=2))
    elif args.shell:
        if not args.version:
            parser.error("--shell needs --version")
        print(_shell(decision, args.version))
    else:
        print(_describe(decision))
    if decision.problems:
        print(_problems(decision), file=sys.stderr)
    return 0 if decision.ok else 2


if __name__ == "__main__":
    sys.exit(main())
