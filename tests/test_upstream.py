"""A team's server as the chat role's first rung, with the local model as the fallback: two
real assistantd processes on loopback (the team server with a key and SmolLM2, the laptop with
--upstream and Gemma 270M), the official openai client on the laptop, and a broken upstream
(a small HTTP server that answers 500 or breaks its stream: the failure modes, on purpose)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from assistantd.cli.views import roles_table
from assistantd.planning.catalog import load_catalog
from assistantd.planning.planner import make_plan, profile_budget
from assistantd.planning.roles import make_role_plans
from tests.support.daemons import Daemon, launch, run_ctl, wait_for
from tests.support.ladder import profile_text
from tests.test_expert_choice import PROFILE, nvidia

TEAM_KEY = "team-key-0123456789"


def upstream_of(daemon: Daemon) -> dict[str, Any]:
    return daemon.status()["upstreams"][0]


def ask(daemon: Daemon) -> bool:
    """A whole chat answer came back (a base model may well answer with nothing but EOS)."""
    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0, timeout=60)
    answer = api.chat.completions.create(
        model="assistantd-chat", messages=[{"role": "user", "content": "Say hi"}], max_tokens=6
    )
    return answer.choices[0].finish_reason in ("stop", "length")


@pytest.fixture
def team_and_laptop(start_daemon, models, tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    team = start_daemon(models["smollm2"], ASSISTANT_API_KEY=TEAM_KEY)
    profile = tmp_path / "laptop.toml"
    profile.write_text(profile_text(decode_tok_s=1, cooldown_s=3))
    laptop = start_daemon(
        models["gemma270m"],
        ASSISTANT_UPSTREAM=team.v1,
        ASSISTANT_UPSTREAM_KEY=TEAM_KEY,
        ASSISTANT_PROFILE=str(profile),
    )
    wait_for(laptop, lambda s: s["upstreams"][0]["serving"] == "chat", 60)
    yield team, laptop


def served_by_team(team: Daemon) -> int:
    status = team.status({"Authorization": f"Bearer {TEAM_KEY}"})
    return int(status["requests_served"])


def test_chat_goes_upstream_falls_back_when_the_team_server_dies_and_comes_back(
    team_and_laptop, models, tmp_path: Path
) -> None:
    team, laptop = team_and_laptop
    before = served_by_team(team)
    assert ask(laptop)
    assert served_by_team(team) == before + 1  # answered by the team server
    api = openai.OpenAI(base_url=laptop.v1, api_key="x", max_retries=0, timeout=60)
    stream = api.chat.completions.create(
        model="assistantd-chat",
        messages=[{"role": "user", "content": "Write a long story about a cat"}],
        max_tokens=400,
        stream=True,
    )
    with pytest.raises(openai.APIError, match="broke off"):
        for index, _ in enumerate(stream):
            if index == 3:
                team.proc.send_signal(signal.SIGKILL)  # the box goes away mid-answer
                killed = time.monotonic()
    answers = [ask(laptop) for _ in range(3)]  # every later request: answered locally
    first_local_s = time.monotonic() - killed
    assert all(answers) and first_local_s < 30
    status = laptop.status()
    assert status["requests_failed"] == 1  # only the stream that was in flight
    up = status["upstreams"][0]
    assert up["serving"] is None and up["shifts"][0]["direction"] == "down"
    team.proc.wait()
    port = int(team.url.rsplit(":", 1)[1])
    back = launch(models["smollm2"], tmp_path / "team-again.log",
                  {"ASSISTANT_API_KEY": TEAM_KEY}, port=port)  # fmt: skip
    try:
        back.wait_healthy()
        wait_for(laptop, lambda s: s["upstreams"][0]["serving"] == "chat", 60)
        up = upstream_of(laptop)
        assert up["shifts"][0]["direction"] == "up"
        assert "answers health checks and keeps the targets" in up["shifts"][0]["reason"]
        served = served_by_team(back)
        assert ask(laptop) and served_by_team(back) == served + 1
    finally:
        back.stop()
    shown = str(laptop.status()) + httpx.get(laptop.url + "/metrics").text + laptop.log()
    assert TEAM_KEY not in shown


class BrokenUpstream(ThreadingHTTPServer):
    """Lists a model, then fails every answer the way `mode` says."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        super().__init__(("127.0.0.1", 0), _Broken)

    @property
    def v1(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Broken(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b'{"object": "list", "data": [{"id": "big-model"}]}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "500":
            self._send(500, b'{"error": {"message": "out of memory"}}')
        elif mode == "shape":
            self._send(200, b'data: {"not": "a chunk"}\n\ndata: [DONE]\n\n', "text/event-stream")
        else:  # a stream that stops before it says anything
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True


@pytest.mark.parametrize("mode", ["500", "shape", "stops"])
def test_a_broken_upstream_costs_no_request_where_the_local_model_can_answer(
    start_daemon, models, mode: str
) -> None:
    broken = BrokenUpstream(mode)
    threading.Thread(target=broken.serve_forever, daemon=True).start()
    try:
        laptop = start_daemon(models["smollm2"], ASSISTANT_UPSTREAM=broken.v1)
        wait_for(laptop, lambda s: s["upstreams"][0]["healthy"], 60)
        assert upstream_of(laptop)["serving"] == "chat"
        assert ask(laptop)  # the upstream failed before its first byte: answered locally
        status = laptop.status()
        assert status["requests_failed"] == 0
        up = status["upstreams"][0]
        assert up["serving"] is None and "failed" in up["shifts"][0]["reason"]
    finally:
        broken.shutdown()


class SlowLink:
    """A TCP forwarder on loopback that holds every piece the server sends for `delay_s`: a
    slow network (this machine's kernel has no netem)."""

    def __init__(self, target_port: int, delay_s: float, piece: int = 256) -> None:
        import asyncio

        self.delay_s = delay_s
        self.piece = piece  # bytes per read: about one streamed token
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def pipe(reader: Any, writer: Any, delay: float) -> None:
            try:
                while data := await reader.read(self.piece):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        async def handle(client_r: Any, client_w: Any) -> None:
            try:
                server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                client_w.close()  # the server is gone: so is the link
                return
            await asyncio.gather(
                pipe(client_r, server_w, 0.0), pipe(server_r, client_w, self.delay_s)
            )

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True).start()
        ready.wait(10)


def test_a_slow_team_server_sends_chat_local_within_the_window(
    start_daemon, models, tmp_path: Path
) -> None:
    team = start_daemon(models["smollm2"], ASSISTANT_API_KEY=TEAM_KEY)
    link = SlowLink(int(team.url.rsplit(":", 1)[1]), delay_s=0.08)
    profile = tmp_path / "laptop.toml"
    profile.write_text(profile_text(decode_tok_s=20, cooldown_s=600))
    laptop = start_daemon(
        models["gemma270m"],
        ASSISTANT_UPSTREAM=f"http://127.0.0.1:{link.port}/v1",
        ASSISTANT_UPSTREAM_KEY=TEAM_KEY,
        ASSISTANT_PROFILE=str(profile),
    )
    wait_for(laptop, lambda s: s["upstreams"][0]["serving"] == "chat", 60)
    api = openai.OpenAI(base_url=laptop.v1, api_key="x", max_retries=0, timeout=120)
    for _ in range(5):  # (short completions are autocomplete's: they stay local)
        if upstream_of(laptop)["serving"] is None:
            break  # shifted: the local base model may well answer with EOS alone
        stream = api.chat.completions.create(
            model="assistantd-chat",
            messages=[{"role": "user", "content": "Count from 1 to 50, separated by commas."}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        for _ in stream:  # 24 tokens upstream: each answer counts as a decode sample
            pass
    wait_for(laptop, lambda s: s["upstreams"][0]["serving"] is None, 30)
    shift = upstream_of(laptop)["shifts"][0]
    assert "misses the targets" in shift["reason"] and "< 20 tok/s" in shift["reason"], shift
    assert ask(laptop) and laptop.status()["requests_failed"] == 0


def test_upstreams_in_order_per_role_with_embeddings_sent_upstream(
    start_daemon, models, tmp_path: Path
) -> None:
    """Two [[upstreams]]: the first unreachable, the second a team server serving chat and
    embeddings. Chat and vectors come from the team server; with it gone, from the laptop."""
    team = start_daemon(models["smollm2"], ASSISTANT_API_KEY=TEAM_KEY)
    gone = BrokenUpstream("500")
    gone_url = gone.v1
    gone.server_close()  # nothing listens there now: connection refused
    config = tmp_path / "laptop.toml"
    config.write_text(
        f'[[upstreams]]\nurl = "{gone_url}"\n\n'
        f'[[upstreams]]\nurl = "{team.v1}"\napi_key_env = "TEAM_BOX_KEY"\n'
        'roles = ["chat", "embeddings"]\n'
    )
    laptop = start_daemon(models["gemma270m"], ASSISTANT_CONFIG=str(config), TEAM_BOX_KEY=TEAM_KEY)

    def rungs(status: dict[str, Any]) -> list[tuple[str, str | None]]:
        return [(u["role"], u["serving"]) for u in status["upstreams"]]

    wait_for(laptop, lambda s: rungs(s)[1:] == [("chat", "chat"), ("embeddings", "embeddings")], 60)
    first, chat_rung, embed_rung = laptop.status()["upstreams"]
    assert not first["healthy"] and first["serving"] is None
    assert chat_rung["about"]["server"] == "assistantd"  # read from the team server's /status
    assert embed_rung["model"] == "assistantd-embed"  # the role id an assistantd lists
    before = served_by_team(team)
    assert ask(laptop)
    api = openai.OpenAI(base_url=laptop.v1, api_key="x", max_retries=0, timeout=60)
    remote = api.embeddings.create(model="assistantd-embed", input=["def f(): pass", "x"])
    assert served_by_team(team) == before + 2 and len(remote.data) == 2
    shown = run_ctl("--url", laptop.url, "status").stdout
    assert "for embeddings: serving embeddings" in shown and "(chat=" in shown
    team.proc.send_signal(signal.SIGKILL)
    local = api.embeddings.create(model="assistantd-embed", input=["def f(): pass"])
    assert len(local.data[0].embedding) == 640  # Gemma 270M's own vectors: answered here
    assert ask(laptop) and laptop.status()["requests_failed"] == 0


def test_with_chat_upstream_autocomplete_gets_the_machine_and_chat_falls_back_in_the_rest() -> None:
    """The shipped catalog on a 4 GB card, with a profile where autocomplete claims none of the
    card from chat (`memory_share = 0`): without an upstream, chat's choice squeezes
    autocomplete; with chat served upstream first, autocomplete gets its best model for the
    whole machine and the local chat fallback fits beside it."""
    auto_section = PROFILE.roles.autocomplete.model_copy(update={"memory_share": 0.0})
    roles = PROFILE.roles.model_copy(update={"autocomplete": auto_section})
    profile = PROFILE.model_copy(update={"roles": roles})
    machine, catalog = nvidia("GTX 1650", 4, ram=8), load_catalog()
    alone = make_plan(catalog, profile.for_role("autocomplete"), machine, None, n_slots=2,
                      role="autocomplete", budget=profile_budget(profile, machine))  # fmt: skip
    local = make_role_plans(catalog, profile, machine, n_slots=2)
    remote = make_role_plans(catalog, profile, machine, n_slots=2, upstream_roles=["chat"])
    assert alone.chosen is not None
    assert local.roles["autocomplete"].chosen.key != alone.chosen.key  # squeezed by chat
    auto, chat = remote.roles["autocomplete"], remote.roles["chat"]
    assert auto.chosen.key == alone.chosen.key and "upstream serves chat" in auto.reason
    assert chat.chosen is not None and "local fallback" in chat.reason
    assert remote.estimated_bytes <= remote.budget.ram_bytes + remote.budget.vram_bytes
    assert remote.to_json()["upstream_roles"] == ["chat"]
    assert "chat         an upstream first" in roles_table(remote)
