"""What backend detection decides: the Decision (backend, CMake arguments, build environment)
and the Problems that keep a GPU backend from being built, with the command that fixes each.

Part of daemon/backend.py, which scripts/setup.sh runs as a plain file before the package is
installed: standard library only, and no imports from the rest of assistantd.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import asdict, dataclass, field

# Every build has GGML_RPC on: remote devices work whatever the local backend.
RPC = "-DGGML_RPC=on"


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
