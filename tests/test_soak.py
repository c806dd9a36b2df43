"""Soak: about a thousand mixed short requests against one running daemon, a third of them
abandoned mid-stream: no 5xx, and the worker's memory does not creep."""

from __future__ import annotations

import itertools
import threading

import httpx
import psutil

from tests.support.daemons import FIM_MID, FIM_PRE, FIM_SUF, Daemon

TOTAL = 960
WORKERS = 4


def _requests() -> itertools.cycle:
    fim = f"{FIM_PRE}def f(x):\n    {FIM_SUF}\n{FIM_MID}"
    return itertools.cycle(
        [
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi!"}],
                                      "max_tokens": 8}),
            ("/v1/completions", {"prompt": fim, "max_tokens": 8, "temperature": 0.2}),
            ("/infill", {"input_prefix": "def g(", "input_suffix": ")\n", "n_predict": 8}),
            ("/v1/embeddings", {"input": ["some code", "more code"]}),
        ]
    )  # fmt: skip


def test_a_thousand_mixed_requests_no_5xx_and_flat_memory(smol_fim: Daemon) -> None:
    worker = psutil.Process(smol_fim.status()["worker"]["pid"])
    plan = _requests()
    lock = threading.Lock()
    done = itertools.count()
    statuses: list[int] = []
    rss: dict[int, int] = {}

    def one(index: int, path: str, body: dict) -> int:
        abandon = index % 3 == 0 and path != "/v1/embeddings"
        if not abandon:
            return httpx.post(smol_fim.url + path, json=body, timeout=120).status_code
        with httpx.stream(
            "POST", smol_fim.url + path, json={**body, "stream": True}, timeout=120
        ) as resp:
            for _ in resp.iter_lines():
                break  # the client leaves after the first event
            return resp.status_code

    def run() -> None:
        while True:
            with lock:
                index = next(done)
                if index >= TOTAL:
                    return
                path, body = next(plan)
                if index % (TOTAL // 4) == 0:
                    rss[index // (TOTAL // 4)] = worker.memory_info().rss
            status = one(index, path, body)
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=run) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    rss[4] = worker.memory_info().rss
    assert len(statuses) == TOTAL
    assert not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert set(statuses) == {200}
    growth = rss[4] - rss[1]
    assert growth < 32 * 2**20, {k: v // 2**20 for k, v in rss.items()}
    assert smol_fim.status()["state"] == "serving"
