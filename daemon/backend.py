"""Which llama.cpp backend to build llama-cpp-python for on this machine, and how.

scripts/setup.sh runs this file as `python3 daemon/backend.py` before the package is installed,
and `assistantctl doctor` imports it as `assistantd.backend`: so it and its two siblings import
the standard library only. Detection reads the OS and the tools on PATH (nvidia-smi, nvcc,
rocminfo, hipcc, vulkaninfo, glslc) and changes nothing, so tests can put stand-in executables on
a temporary PATH. Here: the choice between backends (detect) and the command line; the
per-vendor probes and install commands are in backend_probes, the Decision and Problem it
returns in backend_decision.

Every build has GGML_RPC on: remote devices work whatever the local backend. A GPU whose backend
cannot be built here is reported with the one command that fixes it, and the CPU backend is built
meanwhile (running setup again after the fix builds the GPU one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

# Imported as assistantd.backend, its siblings come from the package. Run as a file
# (`python3 daemon/backend.py`, maybe with -S and before the package is installed), __package__
# is empty and daemon/ is sys.path[0]: the siblings are then the top-level modules of the same
# files (mypy checks the first branch; the second only names the same modules again). Either
# way Decision and Problem are importable from here, as doctor and tests expect.
if __package__:
    from assistantd import backend_probes as probes
    from assistantd.backend_decision import RPC, Decision, Problem
else:
    import backend_probes as probes  # type: ignore[no-redef]
    from backend_decision import RPC, Decision, Problem  # type: ignore[no-redef]

BACKENDS = ("cuda", "hip", "vulkan", "metal", "cpu")
TOOLS = ("nvidia-smi", "nvcc", "rocminfo", "hipcc", "hipconfig", "vulkaninfo", "glslc")


class UnknownBackend(ValueError):
    """A backend name that is none of BACKENDS (nor `auto`)."""


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
    p = probes.Probe(
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
            probes.system_nvcc(p)
        elif tool not in p.tools:
            p.which(tool)
    if p.native_amx():
        decision.cmake_args += [
            f"-DCMAKE_C_FLAGS={probes.NO_AMX}",
            f"-DCMAKE_CXX_FLAGS={probes.NO_AMX}",
        ]
        decision.why += (
            "; without llama.cpp's AMX kernels, which crash on the first prompt in this "
            "llama.cpp (ggml-org/llama.cpp#26954)"
        )
    decision.forced = forced is not None
    decision.gpus = list(dict.fromkeys(p.gpus))  # Vulkan may list a CUDA GPU again
    decision.tools = p.tools
    decision.problems = p.problems
    return decision


def _forced(p: probes.Probe, name: str) -> Decision:
    """The named backend, with blocking problems when this machine cannot build it."""
    blocked = Decision(name, f"{name} asked for, but it cannot be built here", [RPC])
    if name == "cuda":
        driver = probes.nvidia(p)
        return probes.cuda(p, driver, forced=True) or blocked
    if name == "hip":
        return probes.hip(p, probes.rocm_targets(p), forced=True) or blocked
    if name == "vulkan":
        return probes.vulkan(p, probes.vulkan_gpus(p), forced=True) or blocked
    if name == "metal":
        if p.system != "Darwin":
            p.problems.append(Problem("Metal exists only on macOS", "choose another backend", True))
            return blocked
        return Decision("metal", "Metal asked for", ["-DGGML_METAL=on", RPC])
    return Decision("cpu", "cpu asked for", [RPC])


def _auto(p: probes.Probe) -> Decision:
    """The first GPU backend this machine has a GPU for and can build, else the CPU."""
    driver = probes.nvidia(p)
    if p.gpus and (decision := probes.cuda(p, driver, forced=False)):
        return decision
    targets = probes.rocm_targets(p)
    if targets and (decision := probes.hip(p, targets, forced=False)):
        return decision
    if not targets and p.which("hipcc") and "rocminfo" not in p.tools:
        p.problems.append(
            Problem(
                "hipcc is installed but rocminfo is not, so no AMD GPU can be seen",
                p.install("rocminfo"),
            )
        )
    vulkan = probes.vulkan_gpus(p)
    if vulkan and (decision := probes.vulkan(p, vulkan, forced=False)):
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
