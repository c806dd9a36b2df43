"""Request bodies of llama-server's own routes (/infill, /completion), with its names and
bounds: what llama.vscode, llama.vim and scripts written for llama-server send."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from assistantd.api.schemas import (
    MAX_GRAMMAR,
    MAX_TEXT,
    Penalty,
    Probability,
    StopList,
    Temperature,
    _Body,
)


class ExtraChunk(_Body):
    """A context chunk (another file, a clipboard); text is required, as llama-server says."""

    filename: str = Field("", max_length=4096)
    text: str = Field(max_length=MAX_TEXT)


class _LlamaCppBody(_Body):
    """The names llama-server's own routes (/infill, /completion) share."""

    n_predict: int = Field(-1, ge=-1)
    stream: bool = False
    temperature: Temperature | None = None
    top_k: int | None = Field(None, ge=0, le=1000)
    top_p: Probability | None = None
    min_p: Probability | None = None
    stop: StopList | None = None
    seed: int | None = None
    response_fields: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, max_length=64, description='Only these fields; "a/b" names a nested one.'
    )
    cache_prompt: bool = True
    return_tokens: bool = Field(False, description="The answer's token ids in `tokens`.")
    id_slot: int | None = None
    grammar: str | None = Field(None, max_length=MAX_GRAMMAR, description="GBNF.")
    json_schema: dict[str, Any] | None = Field(None, description="A schema the answer follows.")

    @property
    def token_limit(self) -> int | None:
        """None: until a stop or the context end; 0 (llama.vscode's warm-up): cache the
        prompt, say nothing."""
        return None if self.n_predict < 0 else self.n_predict


class InfillRequest(_LlamaCppBody):
    """llama.cpp server's /infill, as llama.vscode and llama.vim send it."""

    model: str | None = Field(None, max_length=256)
    input_prefix: str = Field("", max_length=MAX_TEXT)
    input_suffix: str = Field("", max_length=MAX_TEXT)
    input_extra: list[ExtraChunk] = Field(default_factory=list, max_length=1024)
    prompt: str = Field("", max_length=MAX_TEXT)
    t_max_predict_ms: int | None = Field(
        None, ge=0, le=3_600_000, description="From the first generated token; ends at a newline."
    )
    t_max_prompt_ms: int | None = Field(None, ge=0, le=3_600_000)
    n_cmpl: int = Field(1, ge=1, le=16, description="Alternative completions (an array answer).")
    n_indent: int | None = Field(None, ge=0)
    samplers: list[str] | None = Field(None, max_length=32)


class NativeCompletion(_LlamaCppBody):
    """llama-server's /completion: a prompt as text, token ids, ids mixed with text or a
    `{"prompt_string"}` object, or a list of such prompts; and its sampling names."""

    prompt: Any
    repeat_penalty: float | None = Field(None, ge=0, le=10)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float | bool] | list[list[Any]] | None = None
    n_probs: int = Field(0, ge=0, le=100, description="Each token's probability and n others.")
    post_sampling_probs: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> list[str | list[Any]]:
        """Read once into the list of prompts asked for: a list without token ids at its top
        level holds several prompts (one text in a list is one prompt)."""
        several = isinstance(value, list) and not any(isinstance(v, int) for v in value)
        items = value if several and len(value) != 1 else [value[0] if several else value]
        if not items or len(items) > 64:
            raise ValueError("send between 1 and 64 prompts")
        return [_native_prompt(item) for item in items]

    def prompts(self) -> list[str | list[Any]]:
        """Each prompt asked for: text, or token ids and texts."""
        return list(self.prompt)


def _id_or_text(part: Any) -> bool:
    return isinstance(part, str) or (type(part) is int and part >= 0)


def _native_prompt(item: Any) -> str | list[Any]:
    if isinstance(item, dict):
        if item.get("multimodal_data"):
            raise ValueError("this model takes no images or audio (multimodal_data)")
        text = item.get("prompt_string")
        if not isinstance(text, str):
            raise ValueError("a prompt object needs 'prompt_string' (this model takes no media)")
        item = text
    if isinstance(item, str):
        if len(item) > MAX_TEXT:
            raise ValueError(f"a prompt is longer than {MAX_TEXT} characters")
        return item
    if isinstance(item, list) and 0 < len(item) <= 1_000_000 and all(map(_id_or_text, item)):
        return item
    raise ValueError("a prompt is a text, token ids (with texts between), or {'prompt_string'}")
