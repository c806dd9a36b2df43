"""Every GPU path on a real llama.cpp device: an RPC server on 127.0.0.1 started with
`assistantctl device serve`, which llama.cpp offloads to exactly as to a GPU (own buffers, own
memory figure, layer split, tensor overrides). Through the real daemon and real models: full and
partial offload, the estimate per device against what llama.cpp allocated, experts in RAM, a
device budget lowered while a client streams, two roles on one device, and a device that
goes away."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from assistantd.devices.serve import check_host
from assistantd.errors import ConfigError
from tests.support.daemons import Daemon, run_ctl, wait_for
from tests.support.devices import RpcDevice
from tests.support.ladder import (
    GEMMA_ID,
    StreamingClient,
    hub_repos,
    profile_text,
    write_catalog,
)
from tests.support.synthetic import write_tiny_moe

MiB = 1024 * 1024


@pytest.fixture
def rpc_device(tmp_path: Path) -> Iterator[RpcDevice]:
    device = RpcDevice(tmp_path / "device.log")
    yield device
    device.kill()


def on_device(role: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in role["devices"] if d["device"] == name)


def ask(daemon: Daemon, prompt: str = "Say hi") -> str:
    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0, timeout=60)
    model = daemon.status()["model"]["id"]
    answer = api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=8
    )
    assert answer.choices[0].message.content
    return answer.choices[0].message.content


def test_full_offload_puts_every_layer_on_the_device_and_answers(
    start_daemon, models, rpc_device
) -> None:
    daemon = start_daemon(models["smollm2"], ASSISTANT_RPC=rpc_device.endpoint)
    chat = daemon.status()["roles"]["chat"]
    device = on_device(chat, rpc_device.name)
    assert device["layers"] == 31  # 30 repeating layers and the output layer
    # The weights went where the plan put them: llama.cpp's own figure.
    assert device["allocated"]["weights"] > 0.95 * models["smollm2"].stat().st_size
    assert on_device(chat, "CPU")["allocated"]["kv"] == 0
    assert ask(daemon)
    shown = run_ctl("status", env={**os.environ, "ASSISTANT_PORT": daemon.url.rsplit(":", 1)[1]})
    assert shown.returncode == 0, shown.stderr
    assert f"on {rpc_device.name}: 31 layers" in shown.stdout
    assert f"device     {rpc_device.name} at {rpc_device.endpoint}" in shown.stdout


def test_partial_offload_when_the_device_budget_is_smaller_than_the_model(
    start_daemon, models, rpc_device
) -> None:
    budget = 300 * MiB
    daemon = start_daemon(
        models["smollm2"], ASSISTANT_RPC=rpc_device.endpoint, ASSISTANT_VRAM_BUDGET=str(budget)
    )
    chat = daemon.status()["roles"]["chat"]
    device = on_device(chat, rpc_device.name)
    assert 0 < device["layers"] < 31
    assert device["allocated"]["total"] <= budget
    assert on_device(chat, "CPU")["allocated"]["kv"] > 0  # the other layers' cache is in RAM
    assert ask(daemon)


@pytest.mark.parametrize("n_ctx", [2048, 8192])
@pytest.mark.parametrize("model", ["smollm2", "gemma270m"])
def test_the_estimate_per_device_matches_what_llama_cpp_allocated(
    start_daemon, models, rpc_device, model: str, n_ctx: int
) -> None:
    daemon = start_daemon(
        models[model], ASSISTANT_RPC=rpc_device.endpoint, ASSISTANT_N_CTX=str(n_ctx)
    )
    device = on_device(daemon.status()["roles"]["chat"], rpc_device.name)
    for kind in ("weights", "kv", "compute", "total"):
        estimated, allocated = device["estimated"][kind], device["allocated"][kind]
        assert abs(estimated - allocated) <= 0.10 * allocated, (kind, estimated, allocated)


def test_experts_stay_in_ram_when_the_device_holds_only_the_rest(
    start_daemon, rpc_device, tmp_path: Path
) -> None:
    """A tiny mixture of experts written with the gguf package; the device budget fits its
    attention, shared weights, KV and compute buffer but only some layers' experts."""
    moe = write_tiny_moe(tmp_path / "tiny-moe.gguf")
    whole = start_daemon(moe, ASSISTANT_RPC=rpc_device.endpoint)
    full = on_device(whole.status()["roles"]["chat"], rpc_device.name)["estimated"]["total"]
    whole.stop()
    experts = 50 * MiB  # the experts' share of the file (tests/test_synthetic.py)
    budget = full - experts // 2
    daemon = start_daemon(moe, ASSISTANT_RPC=rpc_device.endpoint, ASSISTANT_VRAM_BUDGET=str(budget))
    chat = daemon.status()["roles"]["chat"]
    assert chat["n_cpu_moe"] > 0 and chat["n_gpu_layers"] == -1, chat
    device, cpu = on_device(chat, rpc_device.name), on_device(chat, "CPU")
    assert device["layers"] == 5  # every layer's attention is on the device
    assert device["allocated"]["total"] <= budget
    # The experts of the first n_cpu_moe layers (of 4) are host memory.
    assert cpu["allocated"]["weights"] >= 0.9 * experts * chat["n_cpu_moe"] / 4
    for kind in ("weights", "kv", "compute"):
        estimated, allocated = device["estimated"][kind], device["allocated"][kind]
        assert abs(estimated - allocated) <= 0.10 * allocated, (kind, estimated, allocated)
    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0)
    done = api.completions.create(model=daemon.status()["model"]["id"], prompt="a", max_tokens=4)
    assert done.usage is not None and done.usage.completion_tokens > 0


def test_a_lower_device_budget_while_a_client_streams_moves_layers_off_it(
    start_daemon, hub, models, rpc_device, tmp_path: Path
) -> None:
    for repo, files in hub_repos(models).items():
        hub.add(repo, files)
    profile = tmp_path / "mine.toml"
    profile.write_text(profile_text(decode_tok_s=1, vram_budget=2048 * MiB))
    daemon = start_daemon(
        None,
        HF_ENDPOINT=hub.url,
        HF_HUB_CACHE=str(tmp_path / "hf"),
        ASSISTANT_CATALOG=str(write_catalog(tmp_path / "catalog.toml", models)),
        ASSISTANT_PROFILE=str(profile),
        ASSISTANT_RPC=rpc_device.endpoint,
    )
    chat = daemon.status()["roles"]["chat"]
    assert daemon.status()["model"]["id"] == GEMMA_ID
    assert chat["placement"] == "gpu" and on_device(chat, rpc_device.name)["layers"] == 19
    client = StreamingClient(daemon.v1)
    client.start()
    try:
        wait_for(daemon, lambda s: client.done >= 2, 120)
        budget = 860 * MiB  # Gemma whole needs ~925 MiB here, its output layer alone ~750
        profile.write_text(profile_text(decode_tok_s=1, vram_budget=budget))
        status = wait_for(daemon, lambda s: s["roles"]["chat"]["placement"] == "partial", 120)
        served = client.done
        wait_for(daemon, lambda s: client.done >= served + 2, 120)
    finally:
        client.stop()
    assert client.failures == []
    chat = status["roles"]["chat"]
    device = on_device(chat, rpc_device.name)
    assert 0 < device["layers"] < 19 and device["allocated"]["total"] <= budget
    shift = status["control"]["shifts"][0]
    assert shift["outcome"] == "done" and "GPU layers -1 →" in shift["reason"], shift
    assert daemon.status()["requests_failed"] == 0


def test_two_roles_share_one_device(start_daemon, models, fim_model, rpc_device) -> None:
    budget = 1024 * MiB
    daemon = start_daemon(
        models["smollm2"],
        ASSISTANT_AUTOCOMPLETE_MODEL=str(fim_model),
        ASSISTANT_RPC=rpc_device.endpoint,
        ASSISTANT_VRAM_BUDGET=str(budget),
    )
    # /health follows chat's worker; autocomplete's may still be loading.
    status = wait_for(daemon, lambda s: s["roles"]["autocomplete"]["state"] == "serving", 120)
    roles = status["roles"]
    chat = on_device(roles["chat"], rpc_device.name)
    fim = on_device(roles["autocomplete"], rpc_device.name)
    assert chat["layers"] == 31 and fim["layers"] > 0
    assert chat["allocated"]["total"] + fim["allocated"]["total"] <= budget
    assert ask(daemon)
    completion = httpx.post(
        daemon.url + "/infill",
        json={"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n", "n_predict": 4},
        timeout=60,
    )
    assert completion.status_code == 200, completion.text


def test_a_device_that_goes_away_fails_its_requests_cleanly_and_the_daemon_carries_on(
    start_daemon, models, rpc_device
) -> None:
    daemon = start_daemon(models["smollm2"], ASSISTANT_RPC=rpc_device.endpoint)
    assert on_device(daemon.status()["roles"]["chat"], rpc_device.name)["layers"] == 31
    rpc_device.kill()
    # The request that finds the device gone fails with an error, not a hang or a crash.
    failed = httpx.post(
        daemon.v1 + "/completions",
        json={"model": daemon.status()["model"]["id"], "prompt": "a", "max_tokens": 4},
        timeout=60,
    )
    assert failed.status_code >= 500 and "error" in failed.json()
    status = wait_for(
        daemon,
        lambda s: (
            s["roles"]["chat"]["state"] == "serving"
            and any("went away" in n for n in s["provision"]["notes"])
        ),
        120,
    )
    chat = status["roles"]["chat"]
    assert [d["device"] for d in chat["devices"] if d["layers"]] == ["CPU"]
    assert ask(daemon)  # served from RAM now
    gone = next(d for d in status["devices"] if d["device"] == rpc_device.name)
    assert not gone["usable"]


def test_device_serve_refuses_a_network_address_without_allow_network() -> None:
    with pytest.raises(ConfigError, match="no authentication.*--allow-network"):
        check_host("0.0.0.0", allow_network=False)
    check_host("0.0.0.0", allow_network=True)
    check_host("::1", allow_network=False)
    refused = run_ctl("device", "serve", "--host", "0.0.0.0", "--port", "1")
    assert refused.returncode == 2 and "ssh -L" in refused.stderr


def test_an_rpc_server_that_does_not_answer_is_a_note_not_a_failure(start_daemon, models) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    daemon = start_daemon(models["smollm2"], ASSISTANT_RPC=f"127.0.0.1:{port}")
    status = daemon.status()
    assert any(f"127.0.0.1:{port} left out" in n for n in status["provision"]["notes"])
    assert [d["device"] for d in status["roles"]["chat"]["devices"]] == ["CPU"]
    assert ask(daemon)
