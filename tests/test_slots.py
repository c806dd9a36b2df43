"""Many requests at once through the real daemon: the worker's slot engine decodes them in
one batch, each with its own sampler and prompt cache (real model, greedy sampling)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

from tests.support.daemons import FIM_MID, FIM_PRE, FIM_SUF, Daemon
from tests.support.near_tie import Entry, assert_same_or_tied, entries

CHAT = {
    "messages": [{"role": "user", "content": "Write a short poem about the sea and the sky."}],
    "max_tokens": 48,
    "temperature": 0,
}
FIM = {
    "prompt": f"{FIM_PRE}def add(a, b):\n    {FIM_SUF}\n\nprint(add(1, 2))\n{FIM_MID}",
    "max_tokens": 48,
    "temperature": 0,
}


class Stream:
    """One streamed request on its own thread: its text, and when tokens came."""

    def __init__(self, daemon: Daemon, path: str, body: dict[str, Any], stop_after: int = 0):
        self.text = ""
        self.entries: list[Entry] = []  # each token with the model's top tokens, when asked
        self.tokens = 0
        self.first: float | None = None
        self.last: float | None = None
        self.finish: str | None = None
        self.status = 0
        self._args = (daemon.v1 + path, {**body, "stream": True}, stop_after)
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        url, body, stop_after = self._args
        with httpx.stream("POST", url, json=body, timeout=120) as resp:
            self.status = resp.status_code
            for line in resp.iter_lines():
                if not line.startswith("data: {"):
                    continue
                choice = json.loads(line[6:])["choices"][0]
                self.entries += entries((choice.get("logprobs") or {}).get("content") or [])
                piece = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                if piece:
                    self.tokens += 1
                    self.text += piece
                    self.first = self.first or time.monotonic()
                    self.last = time.monotonic()
                self.finish = choice.get("finish_reason") or self.finish
                if stop_after and self.tokens >= stop_after:
                    return  # the client goes away mid-answer

    def start(self) -> Stream:
        self.thread.start()
        return self

    def join(self) -> Stream:
        self.thread.join(120)
        return self


def alone(daemon: Daemon, path: str, body: dict[str, Any]) -> str:
    return Stream(daemon, path, body).start().join().text


def test_chat_and_fim_at_once_each_get_exactly_their_own_answer(smol_fim: Daemon) -> None:
    """Each answer among the others is its answer alone; with speculative drafts (on by
    default) batches differ, so a chat may part from it only at a near-tie (support.near_tie)."""
    asked = {"logprobs": True, "top_logprobs": 3}
    chat_body = {**CHAT, **asked}
    other_chat = {**chat_body, "messages": [{"role": "user", "content": "Name ten colours."}]}
    chat_alone = Stream(smol_fim, "/chat/completions", chat_body).start().join()
    other_alone = Stream(smol_fim, "/chat/completions", other_chat).start().join()
    fim_alone = alone(smol_fim, "/completions", FIM)
    chat = Stream(smol_fim, "/chat/completions", chat_body).start()
    other = Stream(smol_fim, "/chat/completions", other_chat).start()
    fim = Stream(smol_fim, "/completions", FIM).start()
    chat.join(), other.join(), fim.join()
    assert (chat.status, other.status, fim.status) == (200, 200, 200)
    assert chat.entries and other.entries
    assert_same_or_tied(chat_alone.entries, chat.entries)
    assert_same_or_tied(other_alone.entries, other.entries)
    assert fim.text == fim_alone
    # The two chats really ran together: each got tokens before the other had finished.
    assert chat.first and other.first and chat.last and other.last
    assert chat.first < other.last and other.first < chat.last


def test_cancel_one_of_three_streams_the_others_finish_and_the_slot_is_reused(
    smol_fim: Daemon,
) -> None:
    long_chat = {**CHAT, "max_tokens": 200, "temperature": 0.7, "seed": 1}
    before = smol_fim.status()
    streams = [Stream(smol_fim, "/chat/completions", long_chat) for _ in range(2)]
    leaving = Stream(smol_fim, "/chat/completions", long_chat, stop_after=5)
    for s in [*streams, leaving]:
        s.start()
    leaving.join()
    later = Stream(smol_fim, "/completions", FIM).start()
    for s in [*streams, later]:
        s.join()
    assert all(s.status == 200 and s.finish in ("stop", "length") for s in [*streams, later])
    deadline = time.monotonic() + 20
    while smol_fim.status()["requests_cancelled"] == before["requests_cancelled"]:
        assert time.monotonic() < deadline, smol_fim.status()
        time.sleep(0.05)
    cancelled = [r for r in smol_fim.status()["recent"] if r["outcome"] == "cancelled"]
    assert cancelled[-1]["completion_tokens"] >= 5  # the tokens it produced are kept


def test_a_shared_prefix_is_reused_from_the_slot_cache(smol_fim: Daemon) -> None:
    shared = "Here is some code to review:\n" + "x = compute(x) + 1\n" * 60
    first = httpx.post(
        smol_fim.v1 + "/completions",
        json={"prompt": shared + "# first", "max_tokens": 4, "temperature": 0},
        timeout=60,
    ).json()
    second = httpx.post(
        smol_fim.v1 + "/completions",
        json={"prompt": shared + "# second", "max_tokens": 4, "temperature": 0},
        timeout=60,
    ).json()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first["usage"]["prompt_tokens"] > 300
    assert cached > 300, second["usage"]
    assert cached < second["usage"]["prompt_tokens"]


def test_n_choices_share_one_prompt(smol_fim: Daemon) -> None:
    reply = httpx.post(
        smol_fim.v1 + "/completions",
        json={"prompt": "Once upon a time", "max_tokens": 12, "n": 3, "seed": 7},
        timeout=60,
    ).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert all(c["text"] and c["finish_reason"] for c in reply["choices"])
    assert len({c["text"] for c in reply["choices"]}) > 1  # alternatives, not copies
    too_many = httpx.post(smol_fim.v1 + "/completions", json={"prompt": "x", "n": 16}, timeout=30)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
