#!/usr/bin/env python3
"""Fair share between API keys (issue 18), printed as a markdown table; the target lives here.

A team server with two named keys: alice's agent loop floods chat (more streams at once than
her share, each retried after a 429 as an agent would), while bob types and his editor sends
Continue-style autocomplete requests. Measured: bob's autocomplete time to first token alone
and under alice's flood (target: p95 under the flood ≤ 1.5 × his idle p95), and the 429s each
key got (target: alice some, bob none). For contrast, the same flood with one key shared by
both, which fair share cannot tell apart.

    .venv/bin/python -m scripts.bench_fairness [--model smollm2] [--n 20] [--flood 16]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx

from scripts import fetch_models
from scripts.bench_editor import _p, _stream, _typing, assistantd, autocomplete_ttft

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef"
TARGET = 1.5


class Flood:
    """`streams` chat answers at once from one key, each restarted when it ends or is refused."""

    def __init__(self, url: str, key: str, streams: int) -> None:
        self.url, self.headers = url, {"Authorization": f"Bearer {key}"}
        self.refused = self.answered = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(streams)]

    def _run(self) -> None:
        body = {"messages": [{"role": "user", "content": "Write a long story about a robot."}],
                "max_tokens": 200, "temperature": 0.7}  # fmt: skip
        while not self.stop.is_set():
            try:
                for _ in _stream(self.url, "/v1/chat/completions", body, self.headers):
                    if self.stop.is_set():
                        break
                self.answered += 1
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 429:
                    raise
                self.refused += 1
                time.sleep(float(exc.response.headers.get("retry-after", "1")))

    def __enter__(self) -> Flood:
        for thread in self.threads:
            thread.start()
        time.sleep(2.0)  # the queue is full
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)


def measure(model: Path, keys_text: str, flood_key: str, typer_key: str, n: int, flood: int):
    """Bob's autocomplete first tokens alone and under the flood; 429s per side."""
    with tempfile.TemporaryDirectory() as folder:
        keys = Path(folder) / "keys"
        keys.write_text(keys_text)
        server = assistantd(model, {"ASSISTANT_API_KEYS_FILE": str(keys)})
        try:
            headers = {"Authorization": f"Bearer {typer_key}"}
            typed = _typing()
            autocomplete_ttft(server.url, 3, typed, headers)  # warm-up
            idle = autocomplete_ttft(server.url, n, typed, headers)
            refused_typer = 0
            busy: list[float] = []
            with Flood(server.url, flood_key, flood) as load:
                for _ in range(n):  # n tries: a refused one is counted, not retried
                    try:
                        busy += autocomplete_ttft(server.url, 1, typed, headers)
                    except httpx.HTTPStatusError as exc:
                        if exc.response.status_code != 429:
                            raise
                        refused_typer += 1
                        time.sleep(1.0)
            return idle, busy, load.refused, refused_typer, load.answered
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", choices=sorted(fetch_models.MODELS))
    parser.add_argument("--n", type=int, default=20, help="autocomplete requests per scenario")
    parser.add_argument("--flood", type=int, default=16, help="alice's chat streams at once")
    args = parser.parse_args()
    model = fetch_models.fetch_all()[args.model]
    scenarios = {
        "two keys (alice floods, bob types)": (f"alice:{ALICE}\nbob:{BOB}\n", ALICE, BOB),
        "one shared key (no fair share possible)": (f"team:{ALICE}\n", ALICE, ALICE),
    }
    print(f"model {args.model}, {args.n} autocomplete requests, a flood of {args.flood} chat "
          "streams\n")  # fmt: skip
    print("| scenario | idle p50 / p95 ms | under flood p50 / p95 ms | p95 ratio "
          f"(target ≤ {TARGET}) | flood 429s / answers | typer 429s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, (keys, flood_key, typer_key) in scenarios.items():
        idle, busy, refused, typer_refused, answered = measure(
            model, keys, flood_key, typer_key, args.n, args.flood
        )
        loaded = f"{_p(busy, 50):.0f} / {_p(busy, 95):.0f}" if busy else "all refused"
        ratio = f"{_p(busy, 95) / _p(idle, 95):.2f}" if busy else "—"
        print(f"| {name} | {_p(idle, 50):.0f} / {_p(idle, 95):.0f} | {loaded} | {ratio} | "
              f"{refused} / {answered} | {typer_refused} of {args.n} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
