"""Verified, resumable downloads into the standard Hugging Face cache.

huggingface_hub (≥1.18) downloads to a per-process temporary file, so an interrupted download
starts over on the next run, and it checks size, not sha256. Here the bytes go to a partial file
named by the blob's sha256 and resume with a Range request on the next run; a finished blob is
sha256-checked before it is placed in the cache layout huggingface_hub itself reads
(blobs/<sha256>, snapshots/<commit>/<file>, refs/main), so `hf_hub_download(...,
local_files_only=True)` finds it.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from huggingface_hub import constants, hf_hub_url
from tqdm import tqdm

from assistantd.errors import ChecksumMismatch, DiskFull, DownloadStopped, HubUnavailable
from assistantd.fetch.hub import RemoteFile, RemoteModel
from assistantd.files import sha256_of

DISK_MARGIN = 256 * 1024 * 1024  # keep this much free after the download
CHUNK = 1 << 20
# One writer per blob: a shift a user asks for may want the file a background download is
# fetching; the second waits and then finds it verified instead of appending to the same part.
_BLOB_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _blob_lock(sha256: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _BLOB_LOCKS.setdefault(sha256, threading.Lock())


@dataclass
class Progress:
    """What /status and the terminal bar show while a model downloads."""

    repo: str = ""
    file: str = ""
    done_bytes: int = 0
    total_bytes: int = 0
    started_at: float = field(default_factory=time.monotonic)
    resumed_from: int = 0

    @property
    def rate_bps(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return (self.done_bytes - self.resumed_from) / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.rate_bps
        return (self.total_bytes - self.done_bytes) / rate if rate > 0 else None

    def to_json(self) -> dict[str, object]:
        eta = self.eta_s
        return {
            "repo": self.repo,
            "file": self.file,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "rate_bytes_per_s": round(self.rate_bps),
            "eta_s": round(eta, 1) if eta is not None else None,
        }


def hf_cache_dir() -> Path:
    return Path(constants.HF_HUB_CACHE)


def repo_dir(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def partial_path(root: Path, remote: RemoteFile) -> Path:
    """Where a file's bytes gather until they are verified (kept across runs: resumable)."""
    return root / "blobs" / f"{remote.sha256}.assistantd-partial"


class Downloader:
    def __init__(
        self,
        *,
        cache: Path | None = None,
        endpoint: str | None = None,
        disk_free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
        on_progress: Callable[[Progress], None] | None = None,
        show_bar: bool | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._stop = stop or threading.Event()
        self.cache = cache or hf_cache_dir()
        self.endpoint = endpoint or constants.ENDPOINT
        self._disk_free = disk_free
        self._on_progress = on_progress
        self._show_bar = sys.stderr.isatty() if show_bar is None else show_bar
        self._bar: tqdm | None = None
        self.progress = Progress()

    def fetch(self, model: RemoteModel) -> list[Path]:
        """All files of `model`, verified; paths in snapshot order (first part first)."""
        root = repo_dir(self.cache, model.repo)
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        missing = [f for f in model.files if not self._verified_blob(root, f)]
        needed = sum(
            f.size - self._partial(root, f).stat().st_size
            if self._partial(root, f).exists()
            else f.size
            for f in missing
        )
        free = self._disk_free(root)
        if missing and needed + DISK_MARGIN > free:
            raise DiskFull(
                f"downloading {model.repo} {model.quant} needs {needed / 2**30:.2f} GiB more "
                f"(plus {DISK_MARGIN // 2**20} MiB to spare) but {root} has "
                f"{free / 2**30:.2f} GiB free: free some space or set ASSISTANT_RAM_BUDGET lower "
                "to pick a smaller model"
            )
        self.progress = Progress(
            repo=model.repo,
            total_bytes=model.total_bytes,
            done_bytes=model.total_bytes - needed,
            resumed_from=model.total_bytes - needed,
        )
        if missing and self._show_bar:
            self._bar = tqdm(
                desc=f"{model.repo} {model.quant}",
                total=model.total_bytes,
                initial=self.progress.done_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
            )
        try:
            for remote in missing:
                with _blob_lock(remote.sha256):
                    if not self._verified_blob(root, remote):  # another may have fetched it
                        self._download(model, root, remote)
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        return [self._place(model, root, f) for f in model.files]

    # --- one file -----------------------------------------------------------------------

    def _partial(self, root: Path, remote: RemoteFile) -> Path:
        return partial_path(root, remote)

    def _verified_blob(self, root: Path, remote: RemoteFile) -> bool:
        """A finished blob counts only if its bytes hash right (a same-size corrupt file
        does not)."""
        blob = root / "blobs" / remote.sha256
        if not blob.exists():
            return False
        if blob.stat().st_size == remote.size and sha256_of(blob) == remote.sha256:
            return True
        blob.unlink()
        return False

    def _download(self, model: RemoteModel, root: Path, remote: RemoteFile) -> None:
        self.progress.file = remote.name
        for _attempt in (1, 2):
            self._transfer(model, root, remote)
            partial = self._partial(root, remote)
            if sha256_of(partial) == remote.sha256:
                os.replace(partial, root / "blobs" / remote.sha256)
                return
            partial.unlink()  # corrupt: start this file over once
            self.progress.done_bytes -= remote.size
        raise ChecksumMismatch(
            f"{model.repo}/{remote.name} downloaded twice with the wrong sha256; the mirror or "
            "the network is corrupting it — try again later or another HF_ENDPOINT"
        )

    def _transfer(self, model: RemoteModel, root: Path, remote: RemoteFile) -> None:
        partial = self._partial(root, remote)
        have = partial.stat().st_size if partial.exists() else 0
        if have > remote.size:
            partial.unlink()
            have = 0
        if have == remote.size:
            return
        url = hf_hub_url(model.repo, remote.name, revision=model.commit, endpoint=self.endpoint)
        headers = {"Range": f"bytes={have}-"} if have else {}
        token = os.environ.get("HF_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            with httpx.stream(
                "GET", url, headers=headers, follow_redirects=True, timeout=httpx.Timeout(30.0)
            ) as response:
                if response.status_code == 200 and have:
                    have = 0  # the server ignored the range: start over
                    partial.unlink(missing_ok=True)
                response.raise_for_status()
                with partial.open("ab") as out:
                    for block in response.iter_bytes(CHUNK):
                        if self._stop.is_set():
                            raise DownloadStopped(
                                f"download of {model.repo}/{remote.name} stopped at shutdown; "
                                "it resumes where it left off on the next start"
                            )
                        out.write(block)
                        self.progress.done_bytes += len(block)
                        self._report()
        except httpx.HTTPError as exc:
            raise HubUnavailable(
                f"download of {model.repo}/{remote.name} stopped ({exc}); it resumes from "
                f"{partial.stat().st_size if partial.exists() else 0} bytes on the next run"
            ) from None

    def _report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.progress)
        if self._bar is not None:  # tqdm draws it no more often than its refresh interval
            self._bar.update(self.progress.done_bytes - self._bar.n)

    def _place(self, model: RemoteModel, root: Path, remote: RemoteFile) -> Path:
        """Link the verified blob where huggingface_hub looks for it."""
        snapshot = root / "snapshots" / model.commit / remote.name
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        if not snapshot.exists():
            target = os.path.relpath(root / "blobs" / remote.sha256, snapshot.parent)
            tmp = snapshot.with_name(snapshot.name + ".link-tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            tmp.replace(snapshot)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(model.commit)
        return snapshot
