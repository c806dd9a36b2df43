"""assistantd as a team's server: named API keys from a file re-read when it changes, a fair
share per key (a bounded number in flight, and queues that take from the keys in turn),
per-key counts in /metrics and /status, and HTTPS."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from assistantd.api.admission import Admission
from assistantd.api.keys import KeyRing, parse
from assistantd.errors import ConfigError
from tests.support.daemons import launch, run_ctl

ALICE, BOB, CAROL = "alice-key-0123456789", "bob-key-0123456789", "carol-key-0123456789"


def test_a_keys_file_names_each_key_and_refuses_what_would_confuse() -> None:
    keys = parse(f"# the team\nalice:{ALICE}\n\n{BOB}\n", "keys")
    assert keys[0].name == "alice" and keys[1].name.startswith("key-")
    assert BOB[:8] not in keys[1].name  # a bare key's name reveals nothing of it
    with pytest.raises(ConfigError, match="line 2: the name 'alice' is used twice"):
        parse(f"alice:{ALICE}\nalice:{BOB}", "keys")
    with pytest.raises(ConfigError, match="under 8"):
        parse("bob:short", "keys")


def test_an_edited_keys_file_takes_effect_and_a_broken_edit_keeps_the_old_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("assistantd.api.keys.RECHECK_S", 0.0)
    path = tmp_path / "keys"
    path.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    ring = KeyRing(None, path)
    assert (ring.name_of(ALICE), ring.name_of(BOB), ring.name_of("nope")) == ("alice", "bob", None)
    path.write_text(f"alice:{ALICE}\ncarol:{CAROL}\n# bob left\n")
    assert (ring.name_of(BOB), ring.name_of(CAROL)) == (None, "carol")
    path.write_text("carol:short\n")  # a typo must not lock the team out
    assert ring.name_of(CAROL) == "carol"


def test_a_worker_queue_takes_from_the_keys_in_turn() -> None:
    """One slot, taken; alice queues five, then bob one: bob goes second, not sixth."""

    async def run() -> list[str]:
        admission = Admission(slots=1, max_waiting=100, timeout_s=10)
        await admission.acquire(1, "alice")
        order: list[str] = []

        async def ask(key: str) -> None:
            await admission.acquire(1, key)
            order.append(key)

        tasks = [asyncio.create_task(ask("alice")) for _ in range(5)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(ask("bob")))
        await asyncio.sleep(0)
        for _ in range(6):
            admission.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(run())[:2] == ["alice", "bob"]


def test_chat_never_takes_the_slot_kept_for_autocomplete() -> None:
    """Three slots, one kept: a third chat waits, autocomplete starts at once."""

    async def run() -> tuple[int, int]:
        admission = Admission(slots=3, max_waiting=100, timeout_s=10)
        admission.reserve = 1
        await admission.acquire(1, "alice")
        await admission.acquire(1, "alice")
        third = asyncio.create_task(admission.acquire(1, "alice"))
        await asyncio.sleep(0)
        assert not third.done()  # the kept slot is free, but not for chat
        await asyncio.wait_for(admission.acquire(0, "bob"), 1)  # autocomplete: at once
        admission.release(0)
        await asyncio.sleep(0)
        assert not third.done()
        admission.release(1)  # a chat slot frees: the waiting chat takes it
        await asyncio.wait_for(third, 1)
        return admission.active, admission.active_chat

    assert asyncio.run(run()) == (2, 2)


@pytest.fixture
def team(start_daemon, models, tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    daemon = start_daemon(
        models["smollm2"],
        ASSISTANT_API_KEYS_FILE=str(keys),
        ASSISTANT_KEY_MAX_REQUESTS="2",
        ASSISTANT_SLOTS="1",
    )
    return daemon, keys


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_named_keys_are_required_counted_by_name_and_never_shown(team) -> None:
    daemon, keys = team
    assert httpx.get(daemon.v1 + "/models").status_code == 401
    assert httpx.get(daemon.v1 + "/models", headers={"x-api-key": BOB}).status_code == 200
    api = openai.OpenAI(base_url=daemon.v1, api_key=ALICE, max_retries=0, timeout=60)
    model = api.models.list().data[0].id
    api.completions.create(model=model, prompt="1, 2, 3,", max_tokens=4)
    metrics = httpx.get(daemon.url + "/metrics", headers=auth(ALICE)).text
    assert 'assistantd_key_requests_total{key="alice",outcome="ok"} 1.0' in metrics
    status = daemon.status(auth(ALICE))
    assert status["keys"][0]["name"] == "alice" and status["keys"][0]["requests"] == 1
    shown = run_ctl("status", env=_ctl_env(daemon.url, BOB))
    assert "key        alice: 1 requests" in shown.stdout, shown.stderr
    everything = metrics + str(status) + shown.stdout + daemon.log()
    assert ALICE not in everything and BOB not in everything
    keys.write_text(f"alice:{ALICE}\ncarol:{CAROL}\n")  # bob leaves, carol joins
    time.sleep(1.2)
    assert httpx.get(daemon.v1 + "/models", headers=auth(BOB)).status_code == 401
    assert httpx.get(daemon.v1 + "/models", headers=auth(CAROL)).status_code == 200


def _ctl_env(url: str, key: str) -> dict[str, str]:
    import os

    return {**os.environ, "ASSISTANT_PORT": url.rsplit(":", 1)[1], "ASSISTANT_API_KEY": key}


def test_a_key_over_its_share_gets_429_and_the_other_key_is_served(team) -> None:
    daemon, _ = team
    model = httpx.get(daemon.v1 + "/models", headers=auth(ALICE)).json()["data"][0]["id"]
    statuses: list[int] = []
    retry_after: list[str | None] = []

    def flood() -> None:
        body = {"model": model, "prompt": "Count: 1, 2, 3,", "max_tokens": 48}
        response = httpx.post(
            daemon.v1 + "/completions", json=body, headers=auth(ALICE), timeout=120
        )
        statuses.append(response.status_code)
        retry_after.append(response.headers.get("retry-after"))

    flooders = [threading.Thread(target=flood) for _ in range(6)]
    for thread in flooders:
        thread.start()
    time.sleep(0.3)
    bob = []
    for _ in range(3):
        body = {"model": model, "prompt": "def add(a, b):", "max_tokens": 4}
        bob.append(
            httpx.post(daemon.v1 + "/completions", json=body, headers=auth(BOB), timeout=120)
        )
    for thread in flooders:
        thread.join()
    assert [r.status_code for r in bob] == [200, 200, 200]
    assert statuses.count(429) >= 3 and statuses.count(200) >= 1, statuses
    assert "1" in retry_after
    keys = {k["name"]: k for k in daemon.status(auth(ALICE))["keys"]}
    assert keys["alice"]["refused"] == statuses.count(429) and keys["bob"]["refused"] == 0


def test_https_with_a_certificate(models, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    daemon = launch(
        models["smollm2"],
        tmp_path / "tls.log",
        {"ASSISTANT_SSL_CERTFILE": str(cert), "ASSISTANT_SSL_KEYFILE": str(key),
         "ASSISTANT_API_KEY": ALICE},
    )  # fmt: skip
    url = daemon.url.replace("http://", "https://")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", verify=str(cert)).status_code == 200:
                    break
            except httpx.ConnectError as exc:
                if "refused" not in str(exc).lower():
                    raise
                time.sleep(0.2)
        listed = httpx.get(url + "/v1/models", headers=auth(ALICE), verify=str(cert))
        assert listed.status_code == 200 and listed.json()["data"]
    finally:
        daemon.stop()
    half = subprocess.run(
        [sys.executable, "-m", "assistantd", "--ssl-certfile", str(cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert half.returncode == 2 and "both --ssl-certfile and --ssl-keyfile" in half.stderr
