"""Request bodies the front door accepts, with bounds on every parameter.

Unknown OpenAI fields are ignored (clients send many); known ones are checked so a bad value
gets a 400 naming the field instead of reaching the model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assistantd.worker.protocol import SAMPLING_KEYS

MAX_STOPS = 16
MAX_TEXT = 4 * 1024 * 1024

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
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")

    def sampling(self) -> dict[str, Any]:
        """The sampling keys this body sets (max_tokens is checked apart, by the caller)."""
        keys = [k for k in SAMPLING_KEYS if k != "max_tokens" and k in type(self).model_fields]
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class TextPart(_Body):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(None)
    name: str | None = Field(None, max_length=256)

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: str | list[TextPart] | None) -> str | list[TextPart] | None:
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"at most {MAX_TEXT} characters")
        return value

    def for_template(self) -> dict[str, str]:
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": text}


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=4096)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(max_length=MAX_TEXT)
    suffix: str | None = Field(None, max_length=MAX_TEXT)
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False

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


class ExtraChunk(_Body):
    filename: str = Field("", max_length=4096)
    text: str = Field("", max_length=MAX_TEXT)


class InfillRequest(_Body):
    """llama.cpp server's /infill, as llama.vscode and llama.vim send it."""

    model: str | None = Field(None, max_length=256)
    input_prefix: str = Field("", max_length=MAX_TEXT)
    input_suffix: str = Field("", max_length=MAX_TEXT)
    input_extra: list[ExtraChunk] = Field(default_factory=list, max_length=1024)
    prompt: str = Field("", max_length=MAX_TEXT)
    n_predict: int = Field(-1, ge=-1)
    stream: bool = False
    temperature: Temperature | None = None
    top_k: int | None = Field(None, ge=0, le=1000)
    top_p: Probability | None = None
    min_p: Probability | None = None
    stop: StopList | None = None
    seed: int | None = None
    t_max_predict_ms: int | None = Field(None, ge=0, le=3_600_000)

    @property
    def token_limit(self) -> int | None:
        return None if self.n_predict < 0 else max(self.n_predict, 1)


class EmbeddingRequest(_Body):
    input: (
        str
        | Annotated[
            list[Annotated[str, Field(max_length=MAX_TEXT)]], Field(min_length=1, max_length=2048)
        ]
    )
    model: str | None = Field(None, max_length=256)
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"at most {MAX_TEXT} characters")
        return value

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class UseRequest(BaseModel):
    """POST /control/use: pin `model` ("catalog-id" or "catalog-id:QUANT"), or hand back."""

    model_config = ConfigDict(extra="forbid")
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
