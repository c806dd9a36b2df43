"""Exact files for a (repo, quant) from the hub API, cached so planning works offline later.

huggingface_hub talks to the hub (HF_ENDPOINT is honoured); the answer — file names, sizes,
sha256 and the commit they belong to — is kept as JSON beside the HF cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from assistantd.errors import HubUnavailable, ModelFileError
from assistantd.files import atomic_write_text

_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RemoteModel:
    """One quant of one repo, pinned to a commit; split GGUFs list every part in order."""

    repo: str
    quant: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RemoteModel:
        return cls(
            data["repo"],
            data["quant"],
            data["commit"],
            tuple(RemoteFile(**f) for f in data["files"]),
        )


def _matches(name: str, quant: str) -> bool:
    stem = _SPLIT.sub(".gguf", name).lower()
    return stem.endswith(f"{quant.lower()}.gguf") and (
        stem[: -len(f"{quant}.gguf")].endswith(("-", ".", "_"))
    )


def _cache_path(cache_dir: Path, repo: str, quant: str) -> Path:
    return cache_dir / "assistantd-hub" / f"{repo.replace('/', '--')}--{quant.lower()}.json"


def cached(cache_dir: Path, repo: str, quant: str) -> RemoteModel | None:
    path = _cache_path(cache_dir, repo, quant)
    try:
        return RemoteModel.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve(
    repo: str,
    quant: str,
    *,
    cache_dir: Path,
    endpoint: str | None = None,
    revision: str = "main",
    timeout_s: float = 10.0,
) -> RemoteModel:
    """Ask the hub which files hold `quant` in `repo` at `revision`; cache the answer."""
    api = HfApi(endpoint=endpoint)
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True, timeout=timeout_s)
    except HfHubHTTPError as exc:
        raise HubUnavailable(f"the hub answered for {repo}: {exc}") from None
    except Exception as exc:  # connection refused, DNS, offline mode …
        raise HubUnavailable(f"the hub is unreachable ({type(exc).__name__}: {exc})") from None
    files = []
    for sibling in info.siblings or []:
        if not sibling.rfilename.lower().endswith(".gguf") or not _matches(
            sibling.rfilename, quant
        ):
            continue
        if sibling.lfs is None or sibling.size is None:
            raise ModelFileError(
                f"{repo}/{sibling.rfilename} has no sha256 on the hub; refusing it"
            )
        files.append(RemoteFile(sibling.rfilename, int(sibling.size), sibling.lfs.sha256))
    if not files:
        raise ModelFileError(f"{repo} has no {quant} GGUF at {revision}")
    files.sort(key=lambda f: f.name)
    model = RemoteModel(repo, quant, str(info.sha), tuple(files))
    path = _cache_path(cache_dir, repo, quant)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(model.to_json()))
    return model
