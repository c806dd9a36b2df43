"""A long prompt pushed out of every slot comes back from RAM (llama-server's --cache-ram):
an editor's autocomplete prompt survives a burst of other requests, through the real daemon."""

from __future__ import annotations

import threading

import httpx

from assistantd.planning.estimate import prompt_cache_share
from assistantd.planning.given import place_file
from assistantd.planning.plan_types import Budget
from assistantd.worker.protocol import PROMPT_CACHE_MAX

CODE = "".join(f"def helper_{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(40))


def complete(url: str, prompt: str) -> dict:
    body = {"prompt": prompt, "n_predict": 8, "temperature": 0}
    return httpx.post(url + "/completion", json=body, timeout=120).json()


def test_a_long_prompt_evicted_from_every_slot_is_restored_not_evaluated_again(
    start_daemon, models
) -> None:
    daemon = start_daemon(models["smollm2"], ASSISTANT_SLOTS="4")
    prompt = CODE + "def typed("
    first = complete(daemon.url, prompt)
    n_prompt = first["timings"]["prompt_n"]
    assert n_prompt > 300
    others = [
        threading.Thread(target=complete, args=(daemon.url, f"# file {i}\n" + CODE[::-1]))
        for i in range(4)
    ]  # four long prompts at once: every slot now holds another one
    for t in others:
        t.start()
    for t in others:
        t.join()
    again = complete(daemon.url, prompt)
    assert again["timings"]["cache_n"] == n_prompt - 1  # all but the last token came back
    assert again["timings"]["prompt_n"] == 1
    assert again["content"] == first["content"]
    short = "Say hi."  # a short prompt is not worth keeping: evaluated again, same answer
    assert complete(daemon.url, short)["content"] == complete(daemon.url, short)["content"]


def test_prompts_are_kept_only_in_ram_the_models_leave(start_daemon, models) -> None:
    """The cache takes what the plan leaves of the RAM budget (up to 512 MiB a worker), never
    memory a model was planned into: with room for the model and 8 MiB more, a ~780-token
    prompt's 18 MB of KV is not kept, and it is evaluated again."""
    assert prompt_cache_share(8 << 30, 3) == PROMPT_CACHE_MAX
    assert prompt_cache_share(300 << 20, 3) == 100 << 20 and prompt_cache_share(-1, 2) == 0
    whole = Budget(ram_bytes=16 << 30, vram_bytes=0)
    option = place_file(models["smollm2"], whole, n_ctx=2048, n_slots=4)
    assert option is not None
    budget = str(option.ram_bytes + (8 << 20))
    daemon = start_daemon(
        models["smollm2"], ASSISTANT_SLOTS="4", ASSISTANT_N_CTX="2048", ASSISTANT_RAM_BUDGET=budget
    )
    prompt = CODE + "def typed("
    n_prompt = complete(daemon.url, prompt)["timings"]["prompt_n"]
    burst = [
        threading.Thread(target=complete, args=(daemon.url, f"# file {i}\n" + CODE[::-1]))
        for i in range(4)
    ]
    for t in burst:
        t.start()
    for t in burst:
        t.join()
    again = complete(daemon.url, prompt)
    assert again["timings"]["prompt_n"] > n_prompt // 2  # evaluated again: nothing was kept
