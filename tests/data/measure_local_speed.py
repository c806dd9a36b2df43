"""Measure prompt and decode speed of GGUF files with llama-cpp-python, as the expert-speed test
constants were measured (tests/test_expert_speed.py):

    .venv/bin/python tests/data/measure_local_speed.py \
        $(.venv/bin/python scripts/fetch_models.py | cut -d' ' -f2)
"""

from __future__ import annotations

import sys
import time

from llama_cpp import Llama


def main(paths: list[str]) -> None:
    for path in paths:
        llm = Llama(model_path=path, n_ctx=2048, n_threads=2, n_batch=512, verbose=False)
        prompt = list(range(100, 600))  # 500 tokens
        best_pp = best_tg = 0.0
        for _ in range(3):
            llm.reset()
            start = time.perf_counter()
            llm.eval(prompt)
            best_pp = max(best_pp, len(prompt) / (time.perf_counter() - start))
        for _ in range(3):
            llm.reset()
            llm.eval([1, 2, 3])
            start = time.perf_counter()
            for i in range(128):
                llm.eval([200 + i])
            best_tg = max(best_tg, 128 / (time.perf_counter() - start))
        print(f"{path.rsplit('/', 1)[-1]}: prompt {best_pp:.0f} tok/s, decode {best_tg:.1f} tok/s")


if __name__ == "__main__":
    main(sys.argv[1:])
