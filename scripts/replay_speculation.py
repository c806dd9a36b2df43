#!/usr/bin/env python3
"""N-gram drafting replayed over recorded answers with this machine's batch costs, printed as
a markdown table: how a drafting rule is weighed without the minute-to-minute noise of live runs.

1. assistantd (speculation off) answers six requests at temperature 0 (the edit and free-form
   answer of scripts/bench_speculation.py, counting, code, a story, an explanation); their
   prompt and answer token ids are kept.
2. `llama_decode` of batches of 1-13 tokens, every logit read out, is timed in this process
   with the slot engine's own context behind ~300 cached tokens.
3. The worker's own NgramDrafter walks each answer, priced by a BatchCosts holding those
   timings (as the engine's holds its live ones): each step costs the timed batch of its drafted
   tokens plus one; the gain is the answer's tokens over that time against one token per step.

Sampling each guessed position (about 1% of a step each here) is left out.

    .venv/bin/python -m scripts.replay_speculation [--model smollm2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from scripts import fetch_models
from scripts.bench import THREADS
from scripts.bench_editor import assistantd
from scripts.bench_speculation import CASES as BENCH_CASES

MORE = [
    ("count", None, "Count from 1 to 1000, separated by commas: 1, 2, 3, 4,"),
    ("code", "Write a Python function that parses a CSV file into a list of dicts.", ""),
    ("story", "Write a very long story about a robot who learns to paint.", ""),
    ("explain", "Explain how a hash map works, with an example in Python.", ""),
]
TOKENS = 256
LENGTHS = (1, 2, 3, 4, 5, 6, 8, 10, 13)


def record(model: Path) -> dict[str, tuple[list[int], list[int]]]:
    """Each case's prompt ids and greedy answer ids, from assistantd with speculation off."""
    cases: list[tuple[str, Any, str]] = [(n, m, p) for n, m, p in BENCH_CASES]
    cases += [(n, [{"role": "user", "content": m}] if m else None, p) for n, m, p in MORE]
    server = assistantd(model, {"ASSISTANT_SPECULATIVE": "off"})
    out = {}
    try:
        with httpx.Client(base_url=server.url, timeout=600) as http:
            for name, messages, prefill in cases:
                prompt = prefill
                if messages:
                    templated = http.post("/apply-template", json={"messages": messages})
                    prompt = templated.json()["prompt"] + prefill
                ids = http.post("/tokenize", json={"content": prompt, "add_special": True})
                answer = http.post("/completion", json={
                    "prompt": prompt, "n_predict": TOKENS, "temperature": 0,
                    "return_tokens": True, "cache_prompt": False}).json()  # fmt: skip
                out[name] = (ids.json()["tokens"], answer["tokens"])
    finally:
        server.stop()
    return out


def batch_seconds(model: Path) -> dict[int, float]:
    """Median seconds of a generation batch of each length, every logit read out."""
    import llama_cpp as L

    from assistantd.worker.allocations import capture
    from assistantd.worker.slot_state import new_context

    capture()  # llama.cpp's log goes to the worker's reader, not to this table
    L.llama_backend_init()
    weights = L.llama_model_load_from_file(str(model).encode(), L.llama_model_default_params())
    ctx = new_context(weights, 1, 4096, 512, THREADS)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(512, 0, 1)

    def decode(tokens: list[int], at: int, every_logit: bool) -> float:
        batch.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, at + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = every_logit or i == len(tokens) - 1
        start = time.perf_counter()
        L.llama_decode(ctx, batch)
        return time.perf_counter() - start

    decode(list(range(100, 400)), 0, False)  # ~300 cached tokens, as an edit's prompt
    timed: dict[int, list[float]] = {n: [] for n in LENGTHS}
    for _ in range(8):
        for n in LENGTHS:
            timed[n].append(decode([500 + i for i in range(n)], 300, True))
            L.llama_memory_seq_rm(mem, 0, 300, -1)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(weights)
    return {n: statistics.median(v) for n, v in timed.items()}


def replay(prompt: list[int], answer: list[int], mode: str, seconds: dict[int, float]) -> dict:
    """The worker's drafter over `answer`: its gain and drafted / kept tokens."""
    from assistantd.worker.batch_cost import BatchCosts
    from assistantd.worker.speculation import NgramDrafter

    costs = BatchCosts()
    for n, s in seconds.items():
        costs.record(n, s, prompt=False)
    drafter = NgramDrafter.over(list(prompt), priced=mode == "auto")
    i, spent = 0, 0.0
    while i < len(answer):
        guess = drafter.draft(len(answer) - i, costs, 0)
        kept = 0
        while kept < len(guess) and i + kept < len(answer) and guess[kept] == answer[i + kept]:
            kept += 1
        kept = min(kept, len(answer) - i - 1)
        spent += costs.seconds(len(guess) + 1) or seconds[1] * (len(guess) + 1)
        if guess:
            drafter.record(len(guess), kept)
        for t in answer[i : i + kept + 1]:
            drafter.push(t)
        i += kept + 1
    gain = len(answer) * seconds[1] / spent
    return {"gain": gain, "drafted": drafter.drafted, "kept": drafter.accepted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", choices=sorted(fetch_models.MODELS))
    args = parser.parse_args()
    model = fetch_models.fetch_all()[args.model]
    answers = record(model)
    seconds = batch_seconds(model)
    one = seconds[1]
    print(f"\n## N-gram drafting replayed on {args.model}, {THREADS} threads\n")
    print("batch cost relative to one token: " + ", ".join(
        f"{n}: {s / one:.2f}×" for n, s in seconds.items() if n > 1))  # fmt: skip
    print("\n| answer | tokens | ngram gain | drafted / kept | auto gain | drafted / kept |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (prompt, answer) in answers.items():
        r = {mode: replay(prompt, answer, mode, seconds) for mode in ("ngram", "auto")}
        print(f"| {name} | {len(answer)} | " + " | ".join(
            f"{r[m]['gain']:.2f}× | {r[m]['drafted']} / {r[m]['kept']}" for m in ("ngram", "auto")
        ) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
