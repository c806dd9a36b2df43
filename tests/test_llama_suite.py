"""A fast subset of llama.cpp's own server test suite (tools/server/tests, from the sdist of the
installed llama-cpp-python) run against assistantd through scripts/llama_suite.py, the wrapper
that translates llama-server's flags and maps the suite's models to SmolLM2. The whole suite
takes about 13 minutes here (`python -m scripts.llama_suite`); this subset covers what does
not depend on the suite's own models: keys and CORS, every embeddings input form, token-id
prompts, input validation, context-size errors and token counting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["test_security.py", "test_embedding.py", "test_completion.py", "test_infill.py",
         "test_chat_completion.py"]  # fmt: skip
# An empty embeddings input gets a 400 here, as OpenAI answers it; llama-server embeds it.
EMPTY_INPUT = "unit/test_embedding.py::test_embedding_mixed_input[-False]"
KEYWORD = (  # CORS's Allow-Headers "*" is left out: browsers never let "*" cover Authorization
    "test_incorrect_api_key or test_correct_api_key or (test_cors_options and not Headers)"
    " or test_cors_origins_localhost_rejects or test_embedding_mixed_input"
    " or test_embedding_content_text_same_as_string or test_completion_with_tokens_input"
    " or test_invalid_input_extra_req or test_context_size_exceeded"
    " or test_chat_completions_token_count"
)


def test_llama_cpp_server_suite_subset_passes() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "scripts.llama_suite", "--files", *FILES, "-k", KEYWORD,
         "--deselect", EMPTY_INPUT, "--list-failures"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    report = run.stdout[-4000:] + run.stderr[-2000:]
    total = re.search(r"\| \*\*total\*\* \| (\d+) \| (\d+) \| (\d+) \|", run.stdout)
    assert total is not None, report
    passed, failed, errors = map(int, total.groups())
    assert failed == errors == 0 and run.returncode == 0, report
    assert passed >= 30, report  # the subset ran, not an empty selection
