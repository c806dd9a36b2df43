"""Request bodies the front door accepts, with bounds on every parameter.

Unknown OpenAI fields are ignored (clients send many); known ones are checked so a bad value
gets a 400 naming the field instead of reaching the model.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assistantd.vocab import Role
from assistantd.worker.protocol import SAMPLING_KEYS

MAX_STOPS = 16
MAX_TEXT = 4 * 1024 * 1024
MAX_GRAMMAR = 256 * 1024

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
StopList = str | Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=MAX_STOPS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str | None = Field(None, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: int | None = Field(None, ge=0, le=1000)
    min_p: Probability | None = None
    stop: StopList | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    n: int = Field(1, ge=1, le=16, description="Choices; each takes a slot of the worker.")
    logit_bias: dict[str, float] | None = Field(
        None, max_length=1024, description="Token id → bias added to its logit (-100 bans it)."
    )
    grammar: str | None = Field(None, max_length=MAX_GRAMMAR, description="GBNF (llama-server).")
    json_schema: dict[str, Any] | None = Field(
        None, description="A JSON schema the answer follows (llama-server's name)."
    )

    def sampling(self) -> dict[str, Any]:
        """The sampling keys this body sets (max_tokens is checked apart, by the caller)."""
        keys = [k for k in SAMPLING_KEYS if k != "max_tokens" and k in type(self).model_fields]
        found = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        return (
            found
            | grammar_keys(self)
            | ({"logit_bias": self.logit_bias} if self.logit_bias else {})
        )


def grammar_keys(body: Any) -> dict[str, Any]:
    """llama-server's top-level `grammar` and `json_schema`, as the worker reads them."""
    return {k: getattr(body, k) for k in ("grammar", "json_schema") if getattr(body, k) is not None}


class TextPart(_Body):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class OtherPart(_Body):
    """Image, audio or file parts: named so the error can say what the model cannot take."""

    type: Literal["image_url", "input_image", "input_audio", "file", "image"]


class FunctionCall(_Body):
    name: str = Field(max_length=256)
    arguments: str | dict[str, Any] = Field("{}")


class ToolCallIn(_Body):
    """An assistant message's earlier tool call, as clients replay it in the history."""

    id: str | None = Field(None, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | OtherPart] | None = Field(None)
    name: str | None = Field(None, max_length=256)
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=128)
    tool_call_id: str | None = Field(None, max_length=256)

    @field_validator("content")
    @classmethod
    def _text_only(
        cls, value: str | list[TextPart | OtherPart] | None
    ) -> str | list[TextPart | OtherPart] | None:
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"at most {MAX_TEXT} characters")
        if isinstance(value, list):
            other = [p.type for p in value if isinstance(p, OtherPart)]
            if other:
                raise ValueError(
                    f"this model takes text only; remove the {other[0]} part (send text parts)"
                )
        return value

    def for_template(self) -> dict[str, Any]:
        """The message as a chat template reads it (tool calls with arguments as objects, as
        the Qwen, Llama and Mistral templates expect)."""
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content if isinstance(part, TextPart))
        else:
            text = self.content or ""
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": text}
        if self.name:
            message["name"] = self.name
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _as_object(call.function.arguments),
                    },
                }
                for call in self.tool_calls
            ]
        return message


def _as_object(arguments: str | dict[str, Any]) -> dict[str, Any] | str:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    return value if isinstance(value, dict) else arguments


class FunctionSpec(_Body):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = Field(None, max_length=65536)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(_Body):
    name: str = Field(max_length=256)


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Body):
    name: str | None = Field(None, max_length=256)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # llama-server: json_object's

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and (
            self.json_schema is None or not self.json_schema.schema_
        ):
            raise ValueError("type json_schema needs json_schema.schema")
        return self


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=4096)
    timings_per_token: bool = Field(False, description="llama-server: timings in the stream.")
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = Field(None, max_length=512)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    n_predict: int | None = Field(
        None, ge=-1, description="llama.cpp's name for max_tokens (llama.vim sends it)."
    )

    @model_validator(mode="after")
    def _supported(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = [t.function.name for t in self.tools or []]
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"tool_choice names '{self.tool_choice.function.name}', which is not among "
                    f"the tools ({', '.join(names) or 'none given'})"
                )
        elif self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs at least one tool in tools")
        if self.add_generation_prompt and self.continue_final_message:
            raise ValueError(
                "add_generation_prompt and continue_final_message cannot both be true: a final "
                "assistant message is continued as it is (prefill), or a new answer starts"
            )
        return self

    @property
    def token_limit(self) -> int | None:
        limit = self.max_completion_tokens or self.max_tokens
        if limit is None and self.n_predict is not None and self.n_predict >= 0:
            return self.n_predict  # 0: a warm-up that caches the prompt and says nothing
        return limit

    def constraints(self) -> dict[str, Any]:
        """Tools, tool_choice, response_format and logprobs as the worker reads them."""
        out: dict[str, Any] = {"logprobs": self.top_logprobs or 0} if self.logprobs else {}
        if self.tools:
            out["tools"] = [t.model_dump(exclude_none=True) for t in self.tools]
            choice = self.tool_choice
            out["tool_choice"] = choice.model_dump() if isinstance(choice, BaseModel) else choice
        if self.response_format is not None:
            out["response_format"] = self.response_format.model_dump(
                by_alias=True, exclude_none=True
            )
        return out


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(max_length=MAX_TEXT)
    suffix: str | None = Field(None, max_length=MAX_TEXT)
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send exactly one prompt per request")
        return value

    @model_validator(mode="after")
    def _no_echo(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("echo is not supported")
        return self

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


EmbeddingInput = str | list[str | int]  # a text, or token ids and texts read as one prompt


class EmbeddingRequest(_Body):
    """What OpenAI's and llama-server's embeddings take: a text, token ids (LangChain's
    OpenAIEmbeddings), token ids mixed with text, a `{"prompt_string"}` or `{"content": [text
    parts]}` object, or a list of those; token ids are read in the served model's vocabulary."""

    input: Any
    model: str | None = Field(None, max_length=256)
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: Any) -> list[EmbeddingInput]:
        if isinstance(value, list) and any(isinstance(v, int) for v in value):
            prompts = [_one_prompt(value)]  # ids at the top level: one prompt
        elif isinstance(value, list):
            if not value or len(value) > 2048:
                raise ValueError("send between 1 and 2048 inputs")
            prompts = [_one_prompt(item) for item in value]
        else:
            prompts = [_one_prompt(value)]
        return prompts

    @property
    def inputs(self) -> list[EmbeddingInput]:
        """One prompt per vector asked for."""
        return list(self.input)


_EMPTY_INPUT = "an input is empty; send at least one character or token per input"


def _one_prompt(item: Any) -> EmbeddingInput:
    """One embeddings prompt, checked: text, ids and text, or an object holding text."""
    if isinstance(item, dict):
        item = _object_text(item)
    if isinstance(item, str):
        if not item:
            raise ValueError(_EMPTY_INPUT)
        if len(item) > MAX_TEXT:
            raise ValueError(f"an input is longer than {MAX_TEXT} characters")
        return item
    if isinstance(item, list) and item and len(item) <= 1_000_000:
        for part in item:
            if isinstance(part, bool) or not isinstance(part, int | str):
                raise ValueError("a prompt list holds token ids (integers) and texts only")
            if isinstance(part, int) and part < 0:
                raise ValueError(f"token id {part} is negative")
        if all(part == "" for part in item):
            raise ValueError(_EMPTY_INPUT)
        return list(item)
    raise ValueError(
        "each input is a text, a list of token ids (or ids and texts), or an object with "
        "'prompt_string' or 'content' text parts"
    )


def _object_text(item: dict[str, Any]) -> str:
    if isinstance(item.get("prompt_string"), str):
        return str(item["prompt_string"])
    parts = item.get("content")
    if isinstance(parts, list) and parts:
        texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) == len(parts) and all(isinstance(t, str) for t in texts):
            return "".join(str(t) for t in texts)
        raise ValueError("embeddings read text parts only: this model takes no images or audio")
    raise ValueError("an object input needs 'prompt_string' or 'content' as a list of text parts")


class UseRequest(BaseModel):
    """POST /control/use: pin `role`'s model ("catalog-id" or "catalog-id:QUANT"), or hand
    that role back to the policy."""

    model_config = ConfigDict(extra="forbid")
    role: Role = "chat"
    model: str | None = Field(None, min_length=1, max_length=200)
    auto: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> UseRequest:
        if (self.model is None) == (not self.auto):
            raise ValueError("give either model or auto=true")
        return self


class ProfileRequest(BaseModel):
    """POST /control/profile: switch to a profile by name or path."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=1000)
