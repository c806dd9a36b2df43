"""A long prompt pushed out of every slot comes back from RAM (llama-server's --cache-ram):
an editor's autocomplete prompt survives a burst of other requests, through the real daemon."""

from __future__ import annotations

import threading

import httpx

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
