"""Roles: chat and autocomplete on two real models at once, routed by model and role id; the
joint plan (two models, one shared FIM model, or autocomplete off, each with its reason); a
missed autocomplete target that shifts only autocomplete while chat streams on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from ruamel.yaml import YAML

from assistantd.planning.catalog import load_catalog
from assistantd.planning.estimate import GiB
from assistantd.planning.hardware import Machine
from assistantd.planning.profiles import parse
from assistantd.planning.roles import make_role_plans
from tests.support.daemons import Daemon, launch, run_ctl
from tests.support.roles import CHAT_REPO, GEMMA_FIM_REPO, SMOL_FIM_REPO, write_catalog

CHAT, AUTO = "smollm2-135m-instruct-q4_1", "gemma-3-270m-fim"


def wait_roles_serving(daemon: Daemon, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = daemon.status()
        workers = [r for r in status["roles"].values() if r["served_by"] == r["role"]]
        if workers and all(r["state"] == "serving" for r in workers):
            return status
        time.sleep(0.3)
    raise AssertionError(f"roles not serving: {daemon.status()['roles']}")


@pytest.fixture(scope="module")
def two_roles(
    models: dict[str, Path], gemma_fim_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """SmolLM2-Instruct for chat, Gemma 270M with FIM tokens for autocomplete: two workers."""
    folder = tmp_path_factory.mktemp("roles")
    daemon = launch(
        models["smollm2"],
        folder / "assistantd.log",
        {"ASSISTANT_AUTOCOMPLETE_MODEL": str(gemma_fim_model), "ASSISTANT_THREADS": "1"},
    )
    daemon.wait_healthy()
    wait_roles_serving(daemon)
    yield daemon
    daemon.stop()


def test_each_role_has_its_own_worker_and_models_lists_them_all(two_roles: Daemon) -> None:
    roles = two_roles.status()["roles"]
    assert roles["chat"]["model"] == CHAT and roles["autocomplete"]["model"] == AUTO
    assert roles["chat"]["worker_pid"] != roles["autocomplete"]["worker_pid"]
    assert roles["autocomplete"]["fim"] is True and roles["chat"]["fim"] is False
    # Nothing given for embeddings: the chat model answers them, and status says so.
    assert roles["embeddings"]["served_by"] == "chat" and roles["embeddings"]["note"]
    ids = [m["id"] for m in httpx.get(two_roles.v1 + "/models").json()["data"]]
    assert ids == [CHAT, AUTO, "assistantd-chat", "assistantd-autocomplete", "assistantd-embed"]


def test_role_ids_and_model_ids_reach_their_role(two_roles: Daemon) -> None:
    api = openai.OpenAI(base_url=two_roles.v1, api_key="x", max_retries=0)
    chat = api.chat.completions.create(
        model="assistantd-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert chat.model == CHAT
    fim = api.completions.create(
        model="assistantd-autocomplete", prompt="def add(a, b):", suffix="\n", max_tokens=4
    )
    assert fim.model == AUTO
    assert api.completions.create(model=AUTO, prompt="x", max_tokens=2).model == AUTO
    # Continue's default FIM template as raw text (its choice for a name it does not know) is
    # served as fill-in-the-middle by the autocomplete model.
    raw = api.completions.create(
        model="assistantd-autocomplete",
        prompt="<fim_prefix>def add(a, b):\n    return<fim_suffix>\n<fim_middle>",
        max_tokens=4,
        temperature=0,
    )
    assert raw.model == AUTO and raw.choices[0].finish_reason in ("length", "stop")
    infill = httpx.post(
        two_roles.url + "/infill",
        json={"input_prefix": "def f():", "input_suffix": "\n", "n_predict": 4},
        timeout=60,
    ).json()
    assert infill["model"] == AUTO
    embedded = api.embeddings.create(model="assistantd-embed", input="hello")
    assert embedded.model == CHAT
    with pytest.raises(openai.NotFoundError) as missing:
        api.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hi"}]
        )
    assert "assistantd-chat" in str(missing.value)


def test_chat_stream_and_fim_completions_run_at_once_on_their_own_workers(
    two_roles: Daemon,
) -> None:
    api = openai.OpenAI(base_url=two_roles.v1, api_key="x", max_retries=0, timeout=120)
    chat_span: dict[str, float] = {}
    chat_result: dict[str, Any] = {}

    def chat() -> None:
        chat_span["start"] = time.monotonic()
        stream = api.chat.completions.create(
            model="assistantd-chat",
            messages=[{"role": "user", "content": "Write a long story about a robot."}],
            max_tokens=160,
            temperature=0,
            stream=True,
        )
        pieces = [(c.model, c.choices[0].finish_reason) for c in stream if c.choices]
        chat_span["end"] = time.monotonic()
        chat_result["models"] = {m for m, _ in pieces}
        chat_result["finish"] = pieces[-1][1]

    thread = threading.Thread(target=chat)
    thread.start()
    time.sleep(1.0)
    fim_done: list[tuple[float, str]] = []
    for _ in range(4):
        answer = api.completions.create(
            model="assistantd-autocomplete", prompt="x = ", suffix="\n", max_tokens=6
        )
        fim_done.append((time.monotonic(), answer.model))
    thread.join(180)
    assert chat_result["models"] == {CHAT} and chat_result["finish"] == "length"
    assert {model for _, model in fim_done} == {AUTO}
    # On this CPU the chat worker held its batch for each autocomplete prompt.
    assert two_roles.status()["cores"]["holds"] >= 4
    # The completions finished while the chat answer was still streaming.
    assert sum(chat_span["start"] < t < chat_span["end"] for t, _ in fim_done) >= 3


def test_status_and_connect_show_each_role(two_roles: Daemon) -> None:
    human = run_ctl("--url", two_roles.url, "status")
    assert human.returncode == 0, human.stderr
    roles_part = human.stdout.split("\nroles\n")[1]
    assert "chat" in roles_part and CHAT in roles_part and AUTO in roles_part
    result = run_ctl("--url", two_roles.url, "connect", "continue")
    assert result.returncode == 0, result.stderr
    config = YAML().load(result.stdout.split("llama.vscode")[0])
    assert config["name"] and config["version"] and config["schema"] == "v1"
    by_model = {m["model"]: m for m in config["models"]}
    assert set(by_model["assistantd-chat"]["roles"]) == {"chat", "edit", "apply"}
    assert by_model["assistantd-autocomplete"]["roles"] == ["autocomplete"]
    assert by_model["assistantd-embed"]["roles"] == ["embed"]
    assert all(
        m["apiBase"] == two_roles.v1 and m["provider"] == "openai" for m in by_model.values()
    )


# -- the joint plan ---------------------------------------------------------------------------


def _catalog(
    path: Path,
    models: dict[str, Path],
    gemma_fim: Path,
    *,
    chat_fim: bool,
    smol_fim: Path | None = None,
) -> Path:
    return write_catalog(path, models["smollm2"], gemma_fim, chat_fim=chat_fim, smol_fim=smol_fim)


PROFILE = """
prefer = "quality"
n_ctx = 2048
[targets]
ttft_p95_ms = 100000
decode_tok_s = 1
[memory]
ram_reserve = "0MiB"
ram_budget = {budget}
[roles.autocomplete]
n_ctx = 1024
[roles.autocomplete.targets]
ttft_p95_ms = {ac_ttft}
reference_prompt_tokens = 64
decode_tok_s = 1
[shift]
window_s = 60
min_requests = 3
cooldown_s = 0
memory_check_s = 1
"""

MACHINE = Machine(ram_bytes=16 * GiB, ram_available_bytes=12 * GiB, cpu_cores=2)


def _plan(catalog: Path, budget: int) -> Any:
    profile = parse(PROFILE.format(budget=budget, ac_ttft=100000), Path("t.toml"), "t")
    return make_role_plans(load_catalog(catalog), profile, MACHINE, n_slots=2)


def test_two_models_when_both_fit_one_shared_fim_model_or_off_when_not(
    models: dict[str, Path], gemma_fim_model: Path, tmp_path: Path
) -> None:
    fim_chat = _catalog(tmp_path / "a.toml", models, gemma_fim_model, chat_fim=True)
    roomy = _plan(fim_chat, 4 * GiB)
    assert roomy.roles["autocomplete"].served_by == "autocomplete"
    assert roomy.roles["autocomplete"].chosen.model == "gemma-3-270m-fim"
    assert roomy.estimated_bytes <= 4 * GiB
    chat_bytes = roomy.roles["chat"].chosen.estimated_bytes
    both = chat_bytes + roomy.roles["autocomplete"].chosen.estimated_bytes
    # Room for SmolLM2 alone, not beside Gemma: SmolLM2 (with FIM tokens) serves both roles.
    tight = _plan(fim_chat, (chat_bytes + both) // 2)
    auto = tight.roles["autocomplete"]
    assert auto.served_by == "chat" and auto.chosen.model == "smollm2-135m-instruct"
    assert "one worker serves both" in auto.reason
    assert tight.to_json()["roles"]["autocomplete"]["served_by"] == "chat"
    assert any("autocomplete" in note for note in tight.to_json()["notes"])
    # The same squeeze with a chat model without FIM tokens: autocomplete is off, and says why.
    plain = _catalog(tmp_path / "b.toml", models, gemma_fim_model, chat_fim=False)
    off = _plan(plain, (chat_bytes + both) // 2).roles["autocomplete"]
    assert off.served_by is None and "no FIM tokens" in off.reason


@pytest.fixture
def planned_roles(start_daemon, hub, models, gemma_fim_model, fim_model, tmp_path: Path):
    """A daemon with no --model that planned chat and autocomplete and fetched both."""

    def start(budget: int, ac_ttft: float, chat_fim: bool = True) -> tuple[Daemon, Path]:
        chat_file = fim_model if chat_fim else models["smollm2"]  # FIM tokens as the catalog says
        hub.add(CHAT_REPO, {"SmolLM2-Q4_1.gguf": chat_file})
        hub.add(GEMMA_FIM_REPO, {"gemma-fim-Q4_K_M.gguf": gemma_fim_model})
        hub.add(SMOL_FIM_REPO, {"SmolLM2-fim-Q4_1.gguf": fim_model})
        profile = tmp_path / "mine.toml"
        profile.write_text(PROFILE.format(budget=budget, ac_ttft=ac_ttft))
        smaller = None if chat_fim else fim_model
        catalog = _catalog(
            tmp_path / "catalog.toml", models, gemma_fim_model, chat_fim=chat_fim, smol_fim=smaller
        )
        daemon = start_daemon(
            None,
            HF_ENDPOINT=hub.url,
            HF_HUB_CACHE=str(tmp_path / "hf"),
            ASSISTANT_CATALOG=str(catalog),
            ASSISTANT_PROFILE=str(profile),
            ASSISTANT_SLOTS="2",
            ASSISTANT_THREADS="1",
        )
        wait_roles_serving(daemon)
        return daemon, profile

    return start


def test_a_budget_too_small_for_both_serves_both_roles_from_one_model(
    planned_roles, models: dict[str, Path], gemma_fim_model: Path, tmp_path: Path
) -> None:
    # A budget that holds SmolLM2 (with FIM tokens) but not SmolLM2 and Gemma together.
    roomy = _plan(_catalog(tmp_path / "a.toml", models, gemma_fim_model, chat_fim=True), 4 * GiB)
    chat = roomy.roles["chat"].chosen.estimated_bytes
    daemon, _ = planned_roles(budget=(chat + roomy.estimated_bytes) // 2, ac_ttft=100000)
    roles = daemon.status()["roles"]
    assert roles["chat"]["model"] == CHAT
    assert roles["autocomplete"]["served_by"] == "chat"
    assert "one worker serves both" in roles["autocomplete"]["note"]
    answer = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0).completions.create(
        model="assistantd-autocomplete", prompt="x = ", suffix="\n", max_tokens=3
    )
    assert answer.model == CHAT


def test_a_missed_autocomplete_target_shifts_only_autocomplete(planned_roles) -> None:
    daemon, profile = planned_roles(budget=4 * GiB, ac_ttft=100000, chat_fim=False)
    status = daemon.status()
    assert status["roles"]["autocomplete"]["model"] == "gemma-3-270m-fim-q4_k_m"
    chat_pid = status["roles"]["chat"]["worker_pid"]
    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0, timeout=120)
    failures: list[str] = []
    chat_models: set[str] = set()
    stop = threading.Event()

    def chat_forever() -> None:
        while not stop.is_set():
            try:
                stream = api.chat.completions.create(
                    model="assistantd-chat",
                    messages=[{"role": "user", "content": "Count to twenty."}],
                    max_tokens=24,
                    stream=True,
                )
                finish = None
                for chunk in stream:
                    chat_models.add(chunk.model)
                    finish = chunk.choices[0].finish_reason if chunk.choices else finish
                if finish not in ("stop", "length"):
                    failures.append(f"chat stream ended with {finish}")
            except Exception as exc:  # none is expected
                failures.append(repr(exc))

    chat = threading.Thread(target=chat_forever, daemon=True)
    chat.start()
    # No model here answers a FIM prompt in 1 ms: autocomplete misses its target.
    profile.write_text(PROFILE.format(budget=4 * GiB, ac_ttft=1))
    deadline = time.monotonic() + 120
    shifted = None
    while time.monotonic() < deadline and shifted is None:
        api.completions.create(
            model="assistantd-autocomplete", prompt="x = 1\n" * 20, suffix="\n", max_tokens=3
        )
        roles = daemon.status()["roles"]
        if roles["autocomplete"]["model"] == "smollm2-fim-q4_1":
            shifted = roles
    stop.set()
    chat.join(120)
    assert shifted is not None, daemon.status()["roles"]["autocomplete"]
    [event] = shifted["autocomplete"]["control"]["shifts"]
    assert event["direction"] == "down" and event["outcome"] == "done"
    assert "p95 TTFT" in event["reason"]
    # Chat was not touched: same worker, no shift, and its stream lost nothing.
    assert shifted["chat"]["worker_pid"] == chat_pid
    assert shifted["chat"]["control"]["shifts"] == []
    assert failures == [] and chat_models == {CHAT}


# -- pure parts -------------------------------------------------------------------------------


def test_fim_markers_of_the_common_families_become_prefix_and_suffix() -> None:
    from assistantd.api.fim_prompt import split_fim

    assert split_fim("<|fim_prefix|>def f(<|fim_suffix|>)\n<|fim_middle|>") == ("def f(", ")\n")
    assert split_fim("<fim_prefix>a<fim_suffix>b<fim_middle>") == ("a", "b")
    assert split_fim("<PRE> a <SUF>b <MID>") == ("a", "b")
    # Qwen's repo-level context stays in front of the prefix.
    repo = "<|repo_name|>r\n<|file_sep|>x.py\n<|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>"
    assert split_fim(repo) == ("<|repo_name|>r\n<|file_sep|>x.py\np", "s")
    assert split_fim("plain text, no markers") is None
    assert split_fim("<fim_prefix>no suffix marker<fim_middle>") is None


def test_memory_pressure_takes_embeddings_first_then_the_most_headroom() -> None:
    from assistantd.control.monitor import Window
    from assistantd.control.pressure import order

    profile = parse(PROFILE.format(budget=4 * GiB, ac_ttft=500), Path("t.toml"), "t")

    def window(ttft_p95_ms: float, decode: float) -> Window:
        return Window(seconds=60, requests=9, ttft_samples=9, decode_samples=9,
                      ttft_p50_ms=ttft_p95_ms / 2, ttft_p95_ms=ttft_p95_ms, decode_p50_tok_s=decode,
                      decode_p95_tok_s=decode, queue_p95_ms=0)  # fmt: skip

    relaxed_chat = {
        "chat": (profile, window(ttft_p95_ms=1000, decode=40)),  # 40× its decode target
        "autocomplete": (profile.for_role("autocomplete"), window(ttft_p95_ms=400, decode=40)),
    }
    assert order(relaxed_chat) == ["chat", "autocomplete"]
    tight_chat = {**relaxed_chat, "chat": (profile, window(ttft_p95_ms=90000, decode=1.1))}
    assert order(tight_chat) == ["autocomplete", "chat"]
    with_embed = {**tight_chat, "embeddings": (profile.for_role("embeddings"), window(1, 99))}
    assert order(with_embed)[0] == "embeddings"


def test_use_pins_one_role_and_refuses_a_role_without_its_own_worker(planned_roles) -> None:
    daemon, _ = planned_roles(budget=4 * GiB, ac_ttft=100000, chat_fim=False)
    pinned = run_ctl("--url", daemon.url, "use", "autocomplete", "smollm2-fim")
    assert pinned.returncode == 0, pinned.stderr
    assert "autocomplete: pinned smollm2-fim Q4_1" in pinned.stdout
    roles = daemon.status()["roles"]
    assert roles["autocomplete"]["model"] == "smollm2-fim-q4_1"
    assert roles["autocomplete"]["control"]["mode"] == "pinned"
    assert roles["chat"]["model"] == CHAT and roles["chat"]["control"]["mode"] == "auto"
    back = run_ctl("--url", daemon.url, "use", "autocomplete", "--auto")
    assert back.returncode == 0 and "automatic shifting is on again" in back.stdout
    refused = run_ctl("--url", daemon.url, "use", "embeddings", "smollm2-135m-instruct")
    assert refused.returncode != 0
    assert "embeddings has no worker of its own" in refused.stderr


def test_a_held_worker_steps_no_batch_until_released(two_roles: Daemon) -> None:
    """The hold flag the daemon writes for autocomplete, written here by hand: the chat
    stream stops for the hold and goes on after it, losing nothing."""
    from assistantd.worker.hold import HoldFlag, path_for

    pid = two_roles.status()["roles"]["chat"]["worker_pid"]
    [socket] = [Path(p) for p in psutil.Process(pid).cmdline() if p.endswith(".sock")]
    flag = HoldFlag(path_for(socket))
    arrivals: list[float] = []
    story = [{"role": "user", "content": "Write a long story about a robot."}]
    body = {"model": "assistantd-chat", "max_tokens": 120, "stream": True, "messages": story}

    def stream() -> None:
        with httpx.stream("POST", two_roles.v1 + "/chat/completions", json=body, timeout=120) as r:
            arrivals.extend(time.monotonic() for line in r.iter_lines() if '"content"' in line)

    thread = threading.Thread(target=stream)
    thread.start()
    while len(arrivals) < 5:
        time.sleep(0.01)
    flag.hold(1.5)
    held_at = time.monotonic()
    time.sleep(0.2)
    during = len(arrivals)
    time.sleep(1.0)
    assert len(arrivals) <= during + 1  # nothing decoded while held (one step may finish)
    flag.hold(0)
    thread.join(120)
    assert len(arrivals) > during + 20  # released: the answer goes on to its end
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False) if a >= held_at - 0.1]
    assert max(gaps) >= 1.0


def test_plan_shows_each_role_with_its_reason(
    models: dict[str, Path], gemma_fim_model: Path, tmp_path: Path
) -> None:
    import json
    import os

    catalog = _catalog(tmp_path / "c.toml", models, gemma_fim_model, chat_fim=False)
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE.format(budget=4 * GiB, ac_ttft=100000))
    machine = tmp_path / "m.json"
    machine.write_text(json.dumps({"ram_bytes": 16 * GiB, "cpu_cores": 4}))
    env = {**os.environ, "ASSISTANT_CATALOG": str(catalog), "HF_HUB_OFFLINE": "1"}
    args = ("plan", "--machine", str(machine), "--profile", str(profile))
    data = json.loads(run_ctl(*args, "--json", env=env).stdout)
    roles = data["roles"]
    assert roles["chat"]["model"] == data["chosen"]["model"] == "smollm2-135m-instruct"
    assert roles["autocomplete"]["model"] == "gemma-3-270m-fim" and roles["autocomplete"]["fim"]
    assert roles["autocomplete"]["served_by"] == "autocomplete" and roles["autocomplete"]["why"]
    assert roles["embeddings"]["served_by"] == "chat" and "embedding" in roles["embeddings"]["why"]
    table = run_ctl(*args, env=env).stdout
    assert table.startswith("backend: described machine\nroles:")
    assert "gemma-3-270m-fim Q4_K_M" in table


def test_less_memory_for_all_roles_shifts_the_role_that_can_give_way(
    planned_roles, models: dict[str, Path], gemma_fim_model: Path, fim_model: Path, tmp_path: Path
) -> None:
    """A smaller fixed budget holds chat beside the small FIM model, not beside Gemma: each
    role re-plans in what the others leave, and autocomplete moves down; chat stays."""
    daemon, profile = planned_roles(budget=4 * GiB, ac_ttft=100000, chat_fim=False)
    catalog = _catalog(tmp_path / "x.toml", models, gemma_fim_model, chat_fim=False,
                       smol_fim=fim_model)  # fmt: skip
    roomy = _plan(catalog, 4 * GiB)
    chat = roomy.roles["chat"].chosen.estimated_bytes
    ladder = {c.model: c.estimated_bytes for c in roomy.roles["autocomplete"].plan.ladder}
    budget = chat + (ladder["smollm2-fim"] + ladder["gemma-3-270m-fim"]) // 2
    chat_pid = daemon.status()["roles"]["chat"]["worker_pid"]
    profile.write_text(PROFILE.format(budget=budget, ac_ttft=100000))
    deadline = time.monotonic() + 90
    while daemon.status()["roles"]["autocomplete"]["model"] != "smollm2-fim-q4_1":
        assert time.monotonic() < deadline, daemon.status()["roles"]["autocomplete"]
        time.sleep(0.3)
    roles = daemon.status()["roles"]
    [event] = roles["autocomplete"]["control"]["shifts"]
    assert event["outcome"] == "done" and "gemma-3-270m-fim Q4_K_M" in event["reason"]
    assert roles["chat"]["worker_pid"] == chat_pid and roles["chat"]["control"]["shifts"] == []
