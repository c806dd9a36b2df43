"""Shifting between real models while a client streams: Gemma 3 270M (the bigger rung) and
SmolLM2 135M (the smaller), served by a hub-compatible server, chosen by a profile on disk that
the tests edit while the daemon runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from assistantd.planning.architecture import from_header
from assistantd.planning.estimate import footprint
from assistantd.planning.gguf_header import read_local
from tests.support.daemons import Daemon, run_ctl, wait_for
from tests.support.ladder import (
    GEMMA_ID,
    SMOL_ID,
    StreamingClient,
    hub_repos,
    profile_text,
    write_catalog,
)


@pytest.fixture
def ladder(start_daemon, hub, models, tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    """A daemon that planned over the two real models and started on Gemma (best quality)."""
    for repo, files in hub_repos(models).items():
        hub.add(repo, files)
    profile = tmp_path / "mine.toml"
    profile.write_text(profile_text(decode_tok_s=1))
    daemon = start_daemon(
        None,
        HF_ENDPOINT=hub.url,
        HF_HUB_CACHE=str(tmp_path / "hf"),
        ASSISTANT_CATALOG=str(write_catalog(tmp_path / "catalog.toml", models)),
        ASSISTANT_PROFILE=str(profile),
    )
    assert daemon.status()["model"]["id"] == GEMMA_ID
    yield daemon, profile


def test_missed_decode_target_shifts_down_while_streaming_then_back_up_when_relaxed(
    ladder,
) -> None:
    daemon, profile = ladder
    client = StreamingClient(daemon.v1)
    client.start()
    try:
        wait_for(daemon, lambda s: client.done >= 2)
        profile.write_text(profile_text(decode_tok_s=10_000))  # no model here can do that
        status = wait_for(daemon, lambda s: s["model"]["id"] == SMOL_ID)
        [event] = status["control"]["shifts"]
        assert event["direction"] == "down" and event["outcome"] == "done"
        assert "median decode" in event["reason"] and "< 10000 tok/s" in event["reason"]
        assert "gemma-3-270m Q4_K_M → smollm2-135m-instruct Q4_1" in event["reason"]
        # At the bottom rung the targets are still missed: said once, no further shifting.
        status = wait_for(daemon, lambda s: s["control"]["note"] is not None)
        assert "smallest rung" in status["control"]["note"]

        served_small = client.done
        profile.write_text(profile_text(decode_tok_s=1, cooldown_s=3))
        status = wait_for(daemon, lambda s: s["model"]["id"] == GEMMA_ID)
        up = status["control"]["shifts"][0]
        assert up["direction"] == "up" and "headroom" in up["reason"], up
        assert up["at"] - status["control"]["shifts"][1]["at"] >= 3  # after the cooldown
        wait_for(daemon, lambda s: client.done >= served_small + 3)
    finally:
        client.stop()
    assert client.failures == []
    assert {GEMMA_ID, SMOL_ID} <= client.models
    assert daemon.status()["requests_failed"] == 0


def test_an_invalid_edit_keeps_the_old_profile_and_says_where(ladder) -> None:
    daemon, profile = ladder
    good = profile.read_text()
    profile.write_text(good.replace("decode_tok_s = 1", "decode_tok_s = -5"))
    status = wait_for(daemon, lambda s: s["control"]["profile"]["error"] is not None)
    error = status["control"]["profile"]["error"]
    line = good.splitlines().index("decode_tok_s = 1") + 1
    assert error["path"] == str(profile) and error["line"] == line
    assert f"{profile}:{line}: targets.decode_tok_s" in error["message"]
    assert status["control"]["profile"]["targets"]["decode_tok_s"] == 1  # old one in force
    assert "still using the previous one" in daemon.log()

    shown = run_ctl("--url", daemon.url, "status")
    assert f"{profile}:{line}" in shown.stdout

    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0)
    assert api.completions.create(model=GEMMA_ID, prompt="1, 2,", max_tokens=4).choices

    profile.write_text("prefer = [\n")  # not TOML at all
    status = wait_for(daemon, lambda s: "not valid TOML" in str(s["control"]["profile"]["error"]))
    assert status["control"]["profile"]["error"]["line"] is not None

    profile.write_text(good.replace("decode_tok_s = 1", "decode_tok_s = 2"))
    status = wait_for(daemon, lambda s: s["control"]["profile"]["error"] is None)
    assert status["control"]["profile"]["targets"]["decode_tok_s"] == 2
    assert status["model"]["id"] == GEMMA_ID


def test_a_lower_memory_budget_at_run_time_forces_a_shift_down(ladder, models) -> None:
    daemon, profile = ladder
    client = StreamingClient(daemon.v1)
    client.start()
    try:
        need = {
            name: footprint(
                from_header(read_local(models[name])), models[name].stat().st_size, 2048, n_seq=3
            )
            for name in ("gemma270m", "smollm2")
        }
        budget = (need["gemma270m"].total_bytes + need["smollm2"].total_bytes) // 2
        profile.write_text(profile_text(decode_tok_s=1, ram_budget=budget))
        status = wait_for(daemon, lambda s: s["model"]["id"] == SMOL_ID)
        event = status["control"]["shifts"][0]
        assert event["direction"] == "profile" and event["outcome"] == "done"
        assert "needs" in event["reason"] and "RAM" in event["reason"]
        wait_for(daemon, lambda s: client.done >= 3)
    finally:
        client.stop()
    assert client.failures == []


def test_use_pins_a_model_and_auto_hands_control_back(ladder) -> None:
    daemon, _ = ladder
    pinned = run_ctl("--url", daemon.url, "use", "smollm2-135m-instruct:Q4_1")
    assert pinned.returncode == 0, pinned.stderr
    assert "smollm2-135m-instruct Q4_1" in pinned.stdout
    status = daemon.status()
    assert status["model"]["id"] == SMOL_ID and status["control"]["mode"] == "pinned"

    refused = run_ctl("--url", daemon.url, "use", "no-such-model")
    assert refused.returncode != 0 and "no model 'no-such-model'" in refused.stderr

    back = run_ctl("--url", daemon.url, "use", "--auto")
    assert back.returncode == 0, back.stderr
    assert daemon.status()["control"]["mode"] == "auto"

    switched = run_ctl("--url", daemon.url, "profile", "speed")
    assert switched.returncode == 0, switched.stderr
    assert daemon.status()["control"]["profile"]["name"] == "speed"
    bad = run_ctl("--url", daemon.url, "profile", "nonesuch")
    assert bad.returncode != 0 and "no profile named 'nonesuch'" in bad.stderr
