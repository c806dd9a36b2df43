"""Raw fill-in-the-middle prompts sent to /v1/completions (Continue's autocomplete, llama.vscode
with its OpenAI endpoint) carry some family's FIM markers as text, chosen by the client from
the model's *name*. They are recognised here and served as prefix + suffix with the serving
model's own FIM tokens, so an editor configured once with a role id keeps completing code when
autocomplete shifts to another model family (and when the name says nothing, as role ids don't).
"""

from __future__ import annotations

# (prefix marker, suffix marker, middle marker): prompt = [context] P prefix S suffix M
MARKERS = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, Qwen3-Coder
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, stable-code: Continue's default
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"),
    ("<PRE> ", " <SUF>", " <MID>"),  # CodeLlama
)


def split_fim(prompt: str) -> tuple[str, str] | None:
    """(prefix, suffix) of a raw FIM prompt, or None if it is not one. Text before the prefix
    marker (Qwen's repo-level context, file paths) stays in front of the prefix."""
    for begin, hole, end in MARKERS:
        if not prompt.endswith(end):
            continue
        body = prompt[: -len(end)]
        start = body.rfind(begin)
        if start < 0:
            continue
        before, rest = body[:start], body[start + len(begin) :]
        prefix, sep, suffix = rest.partition(hole)
        if not sep:
            continue
        return before + prefix, suffix
    return None
