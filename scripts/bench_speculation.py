#!/usr/bin/env python3
"""Speculative decoding, side by side in one run (issue 19), printed as a markdown table.

Two requests at temperature 0: an edit (the answer repeats most of the code in the prompt,
as an editor's edit/apply does) and a free-form answer. Each is sent to assistantd with
speculation off, with n-gram drafts, and with `auto` (the default), and to llama-server
without speculation and with `--spec-type ngram-simple` (`--llama-server PATH`; skipped with
a message when not given). All servers are up at once and take turns, request by request, so
a slow minute on this shared machine falls on every row alike (medians of `--repeats`); a fresh
connection per request (this llama-server build exits when a client reuses one,
../shared/CLIENTS.md). Decode speed is
the server's own `timings.predicted_per_second` from llama-server's `/completion`, which both
serve, so prompt evaluation is left out; drafted / accepted tokens come from the same timings.

    .venv/bin/python -m scripts.bench_speculation [--llama-server PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from scripts import fetch_models
from scripts.bench import THREADS, _free_port
from scripts.bench_editor import N_CTX, SLOTS, Server, assistantd

CODE = "".join(
    f"def price_of_{name}(items, rate):\n"
    f"    total = 0\n"
    f"    for item in items:\n"
    f"        if item.kind == '{name}':\n"
    f"            total += item.price * item.quantity * rate\n"
    f"    return round(total, 2)\n\n\n"
    for name in ("apple", "pear", "plum", "fig", "kiwi", "lime")
)
EDIT = [
    {"role": "user", "content": f"Rename `total` to `amount` everywhere:\n```python\n{CODE}```"}
]
FREE = [{"role": "user", "content": "Write a story about a lighthouse keeper and a storm."}]
TOKENS = 256


def one(url: str, messages: list[dict[str, str]], prefill: str) -> dict[str, float]:
    """One answer through llama-server's /apply-template and /completion (both serve them)."""
    with httpx.Client(timeout=600) as http:
        prompt = http.post(url + "/apply-template", json={"messages": messages}).json()["prompt"]
    with httpx.Client(timeout=600) as http:  # a fresh connection per request
        got = http.post(url + "/completion", json={
            "prompt": prompt + prefill, "n_predict": TOKENS, "temperature": 0,
            "cache_prompt": False}).json()  # fmt: skip
    t = got["timings"]
    return {"tok_s": t["predicted_per_second"], "n": t["predicted_n"],
            "drafted": t.get("draft_n", 0), "accepted": t.get("draft_n_accepted", 0)}  # fmt: skip


CASES = (("edit", EDIT, "```python\n"), ("free", FREE, ""))


def measure(servers: dict[str, Server], repeats: int) -> dict[str, dict[str, dict[str, float]]]:
    """Each server answers each case in turn, `repeats` times (after one warm-up round)."""
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(repeats + 1):
        for case, messages, prefill in CASES:
            for name, server in servers.items():
                got = one(server.url, messages, prefill)
                if round_:
                    runs.setdefault((name, case), []).append(got)

    def median(got: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(r[k] for r in got) for k in got[0]}

    return {name: {case: median(runs[name, case]) for case, _, _ in CASES} for name in servers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server", type=Path, help="llama-server binary to compare")
    parser.add_argument("--model", default="smollm2", choices=sorted(fetch_models.MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--draft-pair",
        action="store_true",
        help="also a draft-model table: SmolLM2 requantized to Q8_0 as the model, its Q4_1 "
        "file as the draft (one vocabulary), against llama-server -md on the same pair",
    )
    args = parser.parse_args()
    model = fetch_models.fetch_all()[args.model]
    starts = {
        f"assistantd {mode}": (lambda m=mode: assistantd(model, {"ASSISTANT_SPECULATIVE": m}))
        for mode in ("off", "ngram", "auto")
    }
    if args.llama_server:
        binary = args.llama_server
        starts["llama-server"] = lambda: llama_server(binary, model, [])
        starts["llama-server ngram-simple"] = lambda: llama_server(
            binary, model, ["--spec-type", "ngram-simple"]
        )
    else:
        print("(llama-server rows skipped: give --llama-server PATH)")
    rows = run_all(starts, args.repeats)
    print_table(f"Speculative decoding on {args.model}, temperature 0, {TOKENS} tokens", rows)
    base = rows["assistantd off"]
    for mode in ("ngram", "auto"):
        r = rows[f"assistantd {mode}"]
        edit, free = (r[k]["tok_s"] / base[k]["tok_s"] for k in ("edit", "free"))
        print(f"\nassistantd {mode} over off: edit {edit:.2f}×, free-form {free:.2f}×")
    if "llama-server ngram-simple" in rows:
        peer = rows["llama-server ngram-simple"]
        for mode in ("ngram", "auto"):
            ours = rows[f"assistantd {mode}"]
            print(f"assistantd {mode} vs llama-server ngram-simple: edit "
                  f"{ours['edit']['tok_s'] / peer['edit']['tok_s']:.2f}×, free-form "
                  f"{ours['free']['tok_s'] / peer['free']['tok_s']:.2f}×")  # fmt: skip
        plain = rows["llama-server"]
        print(f"assistantd off vs llama-server: edit "
              f"{base['edit']['tok_s'] / plain['edit']['tok_s']:.2f}×, free-form "
              f"{base['free']['tok_s'] / plain['free']['tok_s']:.2f}×")  # fmt: skip

    if args.draft_pair:
        draft_table(args)


def run_all(starts: dict[str, Callable[[], Server]], repeats: int) -> dict[str, Any]:
    servers: dict[str, Server] = {}
    try:
        for name, start in starts.items():
            servers[name] = start()
        return measure(servers, repeats)
    finally:
        for server in servers.values():
            server.stop()


def print_table(title: str, rows: dict[str, Any]) -> None:
    print(f"\n## {title}\n")
    print("| server | edit tok/s | drafted / accepted | free-form tok/s | drafted / accepted |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        e, f = r["edit"], r["free"]
        print(f"| {name} | {e['tok_s']:.1f} | {e['drafted']:.0f} / {e['accepted']:.0f} | "
              f"{f['tok_s']:.1f} | {f['drafted']:.0f} / {f['accepted']:.0f} |")  # fmt: skip


def draft_pair() -> tuple[Path, Path]:
    """SmolLM2 Q8_0 (made once with llama.cpp's quantizer) and the Q4_1 file it came from."""
    import llama_cpp

    draft = fetch_models.fetch_all(["smollm2"])["smollm2"]
    target = draft.with_name("SmolLM2-135M-Instruct.Q8_0.gguf")
    if not target.exists():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize, params.nthread = (
            llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
            True,
            2,
        )
        part = target.with_suffix(".part")
        if llama_cpp.llama_model_quantize(str(draft).encode(), str(part).encode(), params) != 0:
            raise SystemExit("could not make the Q8_0 target with llama_model_quantize")
        part.rename(target)
    return target, draft


def draft_table(args: argparse.Namespace) -> None:
    target, draft = draft_pair()
    with_draft = {"ASSISTANT_DRAFT_MODEL": str(draft)}
    starts: dict[str, Callable[[], Server]] = {
        "assistantd off": lambda: assistantd(target, {"ASSISTANT_SPECULATIVE": "off"}),
        "assistantd draft": lambda: assistantd(
            target, {"ASSISTANT_SPECULATIVE": "draft", **with_draft}
        ),
        "assistantd auto (with the draft)": lambda: assistantd(target, with_draft),
    }
    if args.llama_server:
        binary = args.llama_server
        starts["llama-server"] = lambda: llama_server(binary, target, [])
        starts["llama-server -md"] = lambda: llama_server(
            binary, target, ["-md", str(draft), "--spec-type", "draft-simple"]
        )
    rows = run_all(starts, args.repeats)
    print_table("Draft model: SmolLM2 Q8_0, drafted by its Q4_1 file, temperature 0", rows)
    base = rows["assistantd off"]
    for name in rows:
        if name != "assistantd off":
            edit, free = (rows[name][k]["tok_s"] / base[k]["tok_s"] for k in ("edit", "free"))
            print(f"\n{name} over assistantd off: edit {edit:.2f}×, free-form {free:.2f}×")


def llama_server(binary: Path, model: Path, extra: list[str]) -> Server:
    port = _free_port()
    cmd = [str(binary), "-m", str(model), "--port", str(port), "-t", str(THREADS),
           "-tb", str(THREADS), "-c", str(N_CTX * SLOTS), "-np", str(SLOTS), *extra]  # fmt: skip
    return Server("llama-server", cmd, f"http://127.0.0.1:{port}")


if __name__ == "__main__":
    main()
