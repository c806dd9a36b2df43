"""Files shipped inside the package (profiles, the catalog, service templates), found the same
way in a checkout, an editable install and a wheel: through importlib.resources."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped_dir(package: str) -> Path:
    """The folder of a data package (`assistantd.profiles`, `assistantd.systemd`) on disk."""
    return Path(str(files(package)))


def profiles_dir() -> Path:
    return shipped_dir("assistantd.profiles")


def templates_dir() -> Path:
    return shipped_dir("assistantd.systemd")
