"""Downloads through the real huggingface_hub client against a hub-compatible local server."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from huggingface_hub import hf_hub_download

from assistantd.errors import ChecksumMismatch, DiskFull, HubUnavailable
from assistantd.fetch.download import Downloader, repo_dir
from assistantd.fetch.hub import resolve
from assistantd.planning.architecture import from_header
from assistantd.planning.catalog import CatalogModel
from assistantd.planning.estimate import GiB
from assistantd.planning.gguf_header import read_local, read_remote
from assistantd.planning.hardware import Machine
from assistantd.planning.planner import compute_budget, plan
from tests.support.daemons import ROOT

REPO = "test-org/SmolLM2-135M-Instruct-GGUF"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ladder_repo(hub, quant_ladder):  # type: ignore[no-untyped-def]
    hub.add(REPO, {p.name: p for p in quant_ladder.values()})
    return hub


def test_resolve_pins_a_commit_and_download_lands_in_the_hf_cache(
    ladder_repo, quant_ladder, tmp_path: Path
) -> None:
    remote = resolve(REPO, "Q4_K_M", cache_dir=tmp_path, endpoint=ladder_repo.url)
    [file] = remote.files
    assert file.name == quant_ladder["Q4_K_M"].name
    assert file.size == quant_ladder["Q4_K_M"].stat().st_size
    assert file.sha256 == sha(quant_ladder["Q4_K_M"])
    assert remote.commit == ladder_repo.repos[REPO].commit

    cache = tmp_path / "hf"
    [path] = Downloader(cache=cache, endpoint=ladder_repo.url, show_bar=False).fetch(remote)
    assert sha(path) == file.sha256
    # huggingface_hub itself finds the file in its cache, offline.
    found = hf_hub_download(
        REPO, file.name, revision=remote.commit, cache_dir=cache, local_files_only=True
    )
    assert Path(found).resolve() == path.resolve()


def test_a_kill_mid_download_resumes_on_the_next_run(ladder_repo, tmp_path: Path) -> None:
    remote = resolve(REPO, "Q8_0", cache_dir=tmp_path, endpoint=ladder_repo.url)
    cache = tmp_path / "hf"
    ladder_repo.throttle_s = 0.01  # ~6 MiB/s: slow enough to kill part-way
    script = textwrap.dedent(f"""
        from pathlib import Path
        from assistantd.fetch.download import Downloader
        from assistantd.fetch.hub import resolve
        remote = resolve({REPO!r}, "Q8_0", cache_dir=Path({str(tmp_path)!r}),
                         endpoint={ladder_repo.url!r})
        Downloader(cache=Path({str(cache)!r}), endpoint={ladder_repo.url!r},
                   show_bar=False).fetch(remote)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    partial = repo_dir(cache, REPO) / "blobs" / f"{remote.files[0].sha256}.assistantd-partial"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 4 << 20):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = partial.stat().st_size
    assert 0 < kept < remote.total_bytes

    ladder_repo.throttle_s = 0
    ladder_repo.requests.clear()
    [path] = Downloader(cache=cache, endpoint=ladder_repo.url, show_bar=False).fetch(remote)
    assert sha(path) == remote.files[0].sha256
    ranges = [r for (method, _p, r) in ladder_repo.requests if method == "GET" and r]
    assert ranges and int(ranges[0].split("=")[1].rstrip("-")) >= kept


def test_a_same_size_file_with_one_flipped_byte_is_fetched_again(
    ladder_repo, quant_ladder, tmp_path: Path
) -> None:
    remote = resolve(REPO, "Q2_K", cache_dir=tmp_path, endpoint=ladder_repo.url)
    cache = tmp_path / "hf"
    blob = repo_dir(cache, REPO) / "blobs" / remote.files[0].sha256
    blob.parent.mkdir(parents=True)
    data = bytearray(quant_ladder["Q2_K"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    [path] = Downloader(cache=cache, endpoint=ladder_repo.url, show_bar=False).fetch(remote)
    assert sha(path) == remote.files[0].sha256


def test_a_server_sending_wrong_bytes_is_refused(ladder_repo, quant_ladder, tmp_path: Path) -> None:
    remote = resolve(REPO, "Q2_K", cache_dir=tmp_path, endpoint=ladder_repo.url)
    corrupt = tmp_path / "corrupt.gguf"
    data = bytearray(quant_ladder["Q2_K"].read_bytes())
    data[-1] ^= 0x01
    corrupt.write_bytes(bytes(data))
    ladder_repo.repos[REPO].files[remote.files[0].name] = corrupt  # same size, same claimed sha
    with pytest.raises(ChecksumMismatch):
        Downloader(cache=tmp_path / "hf", endpoint=ladder_repo.url, show_bar=False).fetch(remote)
    assert not list((repo_dir(tmp_path / "hf", REPO) / "blobs").iterdir())


def test_a_full_disk_is_a_clear_error_with_nothing_partial_left(
    ladder_repo, tmp_path: Path
) -> None:
    remote = resolve(REPO, "Q8_0", cache_dir=tmp_path, endpoint=ladder_repo.url)
    cache = tmp_path / "hf"
    downloader = Downloader(
        cache=cache, endpoint=ladder_repo.url, show_bar=False, disk_free=lambda _path: 10 << 20
    )
    with pytest.raises(DiskFull, match="free some space"):
        downloader.fetch(remote)
    assert not list((repo_dir(cache, REPO) / "blobs").iterdir())
    assert not [r for r in ladder_repo.requests if "/resolve/" in r[1]]


def test_an_unreachable_hub_says_so(tmp_path: Path) -> None:
    with pytest.raises(HubUnavailable, match="unreachable"):
        resolve(REPO, "Q8_0", cache_dir=tmp_path, endpoint="http://127.0.0.1:9", timeout_s=2)


def test_headers_are_read_over_range_requests_without_the_weights(
    ladder_repo, quant_ladder
) -> None:
    name = quant_ladder["Q8_0"].name
    url = f"{ladder_repo.url}/{REPO}/resolve/main/{name}"
    with httpx.Client() as client:
        header = read_remote(url, client)
    assert from_header(header) == from_header(read_local(quant_ladder["Q8_0"]))
    fetched = [r for (m, _p, r) in ladder_repo.requests if m == "GET"]
    assert fetched and all(r is not None for r in fetched)
    size = quant_ladder["Q8_0"].stat().st_size
    total = sum(int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1 for r in fetched)
    assert total < size // 4


def test_budget_overrides_select_the_largest_quant_that_fits(
    ladder_repo, quant_ladder, tmp_path: Path
) -> None:
    arch = from_header(read_local(quant_ladder["Q8_0"]))
    entry = CatalogModel(
        id="smollm2-135m-instruct",
        family="smollm2",
        repo=REPO,
        quants=("Q8_0", "Q4_K_M", "Q2_K"),
        arch=arch,
        quality=10,
        quality_source="test",
    )
    sizes = {
        (entry.id, q): resolve(REPO, q, cache_dir=tmp_path, endpoint=ladder_repo.url).total_bytes
        for q in entry.quants
    }
    machine = Machine(ram_bytes=64 * GiB, cpu_cores=2, memory_bandwidth_gbs=20)
    unlimited = plan(
        [entry],
        machine,
        compute_budget(machine, ram_reserve=0, vram_reserve=0),
        n_ctx=2048,
        prefer="quality",
        file_sizes=sizes,
    )
    need = {c.quant: c.ram_bytes for c in unlimited.candidates}
    assert need["Q8_0"] > need["Q4_K_M"] > need["Q2_K"]
    for budget, expected in (
        (need["Q8_0"], "Q8_0"),
        (need["Q8_0"] - 1, "Q4_K_M"),
        (need["Q4_K_M"] - 1, "Q2_K"),
    ):
        result = plan(
            [entry],
            machine,
            compute_budget(machine, ram_reserve=0, vram_reserve=0, ram_override=budget),
            n_ctx=2048,
            prefer="quality",
            file_sizes=sizes,
        )
        assert result.chosen is not None and result.chosen.quant == expected
        assert not result.chosen.file_bytes_estimated
