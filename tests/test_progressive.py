"""Progressive start through the real daemon and a hub whose link is throttled: the first
answers come from the rungs that arrive quickly while the planned ones download; the shift up
to each planned model loses nothing; a cut download leaves the small model serving and resumes
on the next start. Times are printed as a user would see them (pytest -s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai

from assistantd.fetch import quick
from assistantd.planning.catalog import load_catalog
from assistantd.planning.hardware import Machine
from assistantd.planning.profiles import parse
from assistantd.planning.roles import make_role_plans
from tests.support import ladder
from tests.support.daemons import launch, run_ctl, wait_for
from tests.support.hub import HubServer
from tests.support.progressive import (
    CHAT_BIG,
    CHAT_SMALL,
    FIM_BIG,
    FIM_SMALL,
    PROFILE,
    RoleStreamer,
    hub_repos,
    write_catalog,
)

MiB, GiB = 2**20, 2**30
# The hub's link: slow enough that the planned models take several times the small ones.
RATE = 32 * MiB


def _env(hub: HubServer, tmp_path: Path, catalog: Path, profile: str) -> dict[str, str]:
    path = tmp_path / "config" / "profile.toml"  # a folder of its own: the daemon watches it
    path.parent.mkdir()
    path.write_text(profile)
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "ASSISTANT_CATALOG": str(catalog),
        "ASSISTANT_PROFILE": str(path),
        "ASSISTANT_SLOTS": "2",
        "ASSISTANT_THREADS": "1",
    }


def _role_models(status: dict) -> tuple[str, str]:
    roles = status["roles"]
    return roles["chat"]["model"], roles["autocomplete"]["model"]


def test_first_answers_come_while_the_planned_models_download_and_the_shift_up_loses_nothing(
    hub, models, gemma_fim_model, fim_model, tmp_path: Path
) -> None:
    for repo, files in hub_repos(models, gemma_fim_model, fim_model).items():
        hub.add(repo, files)
    hub.rate_bps = RATE
    catalog = write_catalog(tmp_path / "catalog.toml", models, gemma_fim_model, fim_model)
    # "Quickly" from the rate measured at start: 2 s of it, less than either planned model.
    env = _env(hub, tmp_path, catalog, PROFILE.format(start="quick_s = 2"))
    started = time.monotonic()
    daemon = launch(None, tmp_path / "assistantd.log", env)
    chat_stream = RoleStreamer(daemon.v1, "assistantd-chat")
    fim_stream = RoleStreamer(daemon.v1, "assistantd-autocomplete", fim=True)
    try:
        daemon.wait_healthy(120)
        api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0, timeout=60)
        chat = api.chat.completions.create(
            model="assistantd-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        fim = api.completions.create(
            model="assistantd-autocomplete", prompt="x = ", suffix="\n", max_tokens=4
        )
        first_answer_s = time.monotonic() - started
        assert (chat.model, fim.model) == (CHAT_SMALL, FIM_SMALL)
        growing = daemon.status()["provision"]["progressive"]
        assert 0 < growing["rate_bytes_per_s"] <= RATE * 1.1
        assert growing["roles"]["autocomplete"]["next"] == "gemma-3-270m-fim Q4_K_M"
        assert growing["roles"]["autocomplete"]["state"] in ("waiting", "downloading")
        shown = run_ctl("--url", daemon.url, "status").stdout
        assert "start      progressive" in shown and "serving smollm2-fim Q4_1" in shown, shown

        chat_stream.start()
        fim_stream.start()
        status = wait_for(daemon, lambda s: _role_models(s) == (CHAT_BIG, FIM_BIG), 120)
        planned_s = time.monotonic() - started
        wait_for(daemon, lambda s: min(chat_stream.served_since(CHAT_BIG),
                                       fim_stream.served_since(FIM_BIG)) >= 2)  # fmt: skip
    finally:
        chat_stream.stop()
        fim_stream.stop()
        daemon.stop()
    assert chat_stream.failures == [] and fim_stream.failures == []
    assert {CHAT_SMALL, CHAT_BIG} <= set(chat_stream.models)
    assert {FIM_SMALL, FIM_BIG} <= set(fim_stream.models)
    for role in ("chat", "autocomplete"):
        [event] = status["roles"][role]["control"]["shifts"]
        assert event["direction"] == "up" and event["outcome"] == "done", event
        assert event["reason"].startswith("planned model downloaded"), event
    assert all(g["state"] == "done" for g in status["provision"]["progressive"]["roles"].values())
    assert status["requests_failed"] == 0
    print(
        f"\nthrottled hub at {RATE / MiB:.0f} MiB/s, empty cache: first answer "
        f"{first_answer_s:.1f} s after `assistantd` started, planned models served after "
        f"{planned_s:.1f} s"
    )


def test_a_cut_download_leaves_the_small_model_serving_and_resumes_on_the_next_start(
    hub, models, tmp_path: Path
) -> None:
    for repo, files in ladder.hub_repos(models).items():
        hub.add(repo, files)
    hub.rate_bps = RATE
    catalog = ladder.write_catalog(tmp_path / "catalog.toml", models)
    # A fixed bound between SmolLM2 (98 MB) and Gemma (253 MB).
    profile = ladder.profile_text(decode_tok_s=1) + '[start]\nquick_bytes = "120MB"\n'
    env = _env(hub, tmp_path, catalog, profile)
    first = launch(None, tmp_path / "first.log", env)
    try:
        first.wait_healthy(120)
        wait_for(first, lambda s: _done_bytes(s) >= 16 * MiB, 60)
        hub.close()  # the link drops mid-download
        status = wait_for(first, lambda s: _chat(s)["state"] == "failed", 60)
        assert "keeps serving" in _chat(status)["note"], _chat(status)
        answer = httpx.post(
            first.v1 + "/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=60,
        )
        assert answer.status_code == 200 and answer.json()["model"] == ladder.SMOL_ID
    finally:
        first.stop()
    [partial] = (tmp_path / "hf").rglob("*.assistantd-partial")
    kept = partial.stat().st_size
    assert kept >= 16 * MiB

    again = HubServer(port=int(hub.url.rsplit(":", 1)[1]))  # back, at full speed
    for repo, files in ladder.hub_repos(models).items():
        again.add(repo, files)
    second = launch(None, tmp_path / "second.log", env)
    try:
        second.wait_healthy(60)
        status = wait_for(second, lambda s: s["model"]["id"] == ladder.GEMMA_ID, 60)
        [event] = status["control"]["shifts"]
        assert event["reason"].startswith("planned model downloaded"), event
        assert any("progressive start" in n for n in status["provision"]["notes"])
        ranges = [r for (m, p, r) in again.requests if m == "GET" and "gemma" in p and r]
        assert ranges and int(ranges[-1].split("=")[1].rstrip("-")) >= kept, again.requests
    finally:
        second.stop()
        again.close()


def _chat(status: dict) -> dict:
    return status["provision"]["progressive"]["roles"]["chat"]


def _done_bytes(status: dict) -> int:
    growing = status["provision"]["progressive"]
    download = growing and growing["roles"]["chat"]["download"]
    return int(download["done_bytes"]) if download else 0


# -- the choice alone ---------------------------------------------------------------------------


def _choose(catalog: Path, start: str, tmp_path: Path) -> quick.Progressive | None:
    profile = parse(PROFILE.format(start=start), Path("p.toml"), "p")
    machine = Machine(ram_bytes=16 * GiB, ram_available_bytes=12 * GiB, cpu_cores=2)
    result = make_role_plans(load_catalog(catalog), profile, machine, n_slots=2)
    ladders = {c.role: [c.chosen, *[x for x in c.plan.ladder if x != c.chosen]]
               for c in result.workers if c.chosen and c.plan}  # fmt: skip
    models = {m.id: m for m in load_catalog(catalog)}
    return quick.choose(result, ladders, models, profile.start, tmp_path, stop=threading.Event())


def test_the_bound_is_shared_by_the_roles_and_the_profile_can_turn_it_off(
    models, gemma_fim_model, fim_model, tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path / "catalog.toml", models, gemma_fim_model, fim_model)
    both = _choose(catalog, 'quick_bytes = "200MB"', tmp_path)  # two SmolLM2s, not one Gemma
    assert both is not None and both.rate_bps is None
    assert {r: (g.quick.model, g.planned.model) for r, g in both.roles.items()} == {
        "chat": ("smollm2-135m-instruct", "gemma-3-270m"),
        "autocomplete": ("smollm2-fim", "gemma-3-270m-fim"),
    }
    roomy = _choose(catalog, 'quick_bytes = "600MB"', tmp_path)  # both planned models in time
    assert roomy is None
    # Chat's Gemma comes first and leaves too little for autocomplete's: it starts small.
    chat_only = _choose(catalog, 'quick_bytes = "400MB"', tmp_path)
    assert chat_only is not None and list(chat_only.roles) == ["autocomplete"]
    # Nothing arrives in time: each role still starts on its smallest rung.
    tight = _choose(catalog, 'quick_bytes = "1MB"', tmp_path)
    assert tight is not None and tight.roles["autocomplete"].quick.model == "smollm2-fim"
    assert _choose(catalog, 'progressive = false\nquick_bytes = "1MB"', tmp_path) is None
