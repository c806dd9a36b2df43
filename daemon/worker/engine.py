"""The model itself, wrapped for the worker process: generation that stops on a flag.

Runs only inside the worker (never in the daemon), so a native crash or an OOM kill takes the
worker down and leaves the daemon serving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import jinja2
import llama_cpp
from llama_cpp import Llama, StoppingCriteriaList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from assistantd.errors import ContextOverflow, FimUnsupported, InvalidRequest
from assistantd.worker.protocol import SAMPLING_KEYS

Event = dict[str, Any]

# For base models without a template of their own.
_CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _stream(result: object) -> Iterator[dict[str, Any]]:
    """create_completion(stream=True) returns an iterator of chunk dicts."""
    return cast(Iterator[dict[str, Any]], result)


def _as_chat_chunks(chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Turn text-completion stream chunks into chat.completion.chunk objects."""
    first = True
    for chunk in chunks:
        choice = chunk["choices"][0]
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        if choice["text"] or first:
            delta["content"] = choice["text"]
        first = False
        yield {
            "id": "chat" + chunk["id"],
            "object": "chat.completion.chunk",
            "created": chunk["created"],
            "model": chunk["model"],
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": choice["finish_reason"],
                }
            ],
        }


@dataclass(frozen=True)
class FimTokens:
    """Fill-in-the-middle token ids from the model's vocabulary; -1 where absent."""

    pre: int
    suf: int
    mid: int
    rep: int
    sep: int

    @property
    def supported(self) -> bool:
        return min(self.pre, self.suf, self.mid) >= 0


class _Progress:
    """Per-token hook: counts tokens, times the first one, and says when to stop."""

    def __init__(self, llm: Llama, should_stop: Callable[[], bool], deadline: float | None):
        self._llm = llm
        self._should_stop = should_stop
        self._deadline = deadline
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.prompt_tokens = 0
        self.sampled = 0
        self.cancelled = False
        self.timed_out = False

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.prompt_tokens = self._llm.n_tokens
        self.sampled += 1
        if self._should_stop():
            self.cancelled = True
            return True
        if self._deadline is not None and time.perf_counter() > self._deadline:
            self.timed_out = True
            return True
        return False

    def summary(self, finish_reason: str | None, max_tokens: int | None) -> Event:
        end = time.perf_counter()
        first = self.first_token_at or end
        prompt_ms = (first - self.started) * 1000
        predicted_ms = (end - first) * 1000
        # The hook sees every sampled token, including an end-of-generation token or one it
        # refused; neither reaches the client.
        if self.cancelled or self.timed_out or finish_reason == "stop":
            completion = max(self.sampled - 1, 0)
        else:
            completion = min(self.sampled, max_tokens or self.sampled)
        return {
            "type": "end",
            "finish_reason": "cancelled" if self.cancelled else finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion,
            },
            "timings": {
                "prompt_n": self.prompt_tokens,
                "prompt_ms": prompt_ms,
                "prompt_per_second": self.prompt_tokens / prompt_ms * 1000 if prompt_ms else 0.0,
                "predicted_n": completion,
                "predicted_ms": predicted_ms,
                "predicted_per_second": (
                    (completion - 1) / predicted_ms * 1000
                    if predicted_ms and completion > 1
                    else 0.0
                ),
            },
        }


class Engine:
    """One loaded GGUF. Not thread-safe: the worker runs one generation at a time."""

    def __init__(
        self, model_path: str, *, n_ctx: int, threads: int, n_gpu_layers: int, model_id: str
    ) -> None:
        self.model_path = model_path
        self.model_id = model_id
        self.llm = Llama(
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=n_gpu_layers,
            verbose=False,
        )
        self._threads = threads
        self._n_gpu_layers = n_gpu_layers
        vocab = self.llm._model.vocab
        self.fim = FimTokens(
            pre=llama_cpp.llama_vocab_fim_pre(vocab),
            suf=llama_cpp.llama_vocab_fim_suf(vocab),
            mid=llama_cpp.llama_vocab_fim_mid(vocab),
            rep=llama_cpp.llama_vocab_fim_rep(vocab),
            sep=llama_cpp.llama_vocab_fim_sep(vocab),
        )
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.has_chat_template = template is not None
        token_text = self.llm._model.token_get_text
        self._chat_formatter = Jinja2ChatFormatter(
            template=template or _CHATML_TEMPLATE,
            eos_token=token_text(self.llm.token_eos()),
            bos_token=token_text(self.llm.token_bos()) if self._add_bos else "",
            stop_token_ids=[self.llm.token_eos()],
        )
        self._embedder: Llama | None = None
        self._embed_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_path": self.model_path,
            "n_ctx": self.llm.n_ctx(),
            "n_ctx_train": self.llm._model.n_ctx_train(),
            "fim": self.fim.supported,
            "chat_template": "gguf" if self.has_chat_template else "chatml (the model has none)",
            "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
            "threads": self._threads,
        }

    # --- generation ---------------------------------------------------------------------

    def generate(
        self, kind: str, params: dict[str, Any], should_stop: Callable[[], bool]
    ) -> Generator[Event, None, None]:
        """Yield one `chunk` event per token, then one `end` event with usage and timings."""
        deadline_ms = params.get("t_max_predict_ms")
        deadline = time.perf_counter() + deadline_ms / 1000 if deadline_ms else None
        progress = _Progress(self.llm, should_stop, deadline)
        sampling = {k: params[k] for k in SAMPLING_KEYS if params.get(k) is not None}
        common = {
            **sampling,
            # No limit given means "until a stop or the context end" (OpenAI's meaning); left
            # out, llama-cpp-python would cut every answer at 16 tokens.
            "max_tokens": params.get("max_tokens"),
            "stream": True,
            "model": self.model_id,
            "stopping_criteria": StoppingCriteriaList([progress]),
        }
        if kind == "chat":
            prompt, stops = self._chat_prompt(params["messages"])
            common["stop"] = [*_as_list(common.get("stop")), *stops]
            chunks = _as_chat_chunks(_stream(self.llm.create_completion(prompt=prompt, **common)))
        elif kind == "completion":
            chunks = _stream(
                self.llm.create_completion(prompt=self._completion_prompt(params), **common)
            )
        elif kind == "infill":
            chunks = _stream(
                self.llm.create_completion(prompt=self._infill_prompt(params), **common)
            )
        else:
            raise InvalidRequest(f"unknown generation kind {kind!r}")

        finish_reason = None
        try:
            for chunk in chunks:
                choice = chunk["choices"][0] if chunk["choices"] else {}
                finish_reason = choice.get("finish_reason") or finish_reason
                yield {"type": "chunk", "data": chunk}
        except ValueError as exc:
            if "exceed context window" in str(exc):
                raise ContextOverflow(
                    f"{exc}: shorten the prompt or lower max_tokens", param="messages"
                ) from None
            raise InvalidRequest(str(exc)) from None
        if progress.timed_out:
            finish_reason = "length"
        yield progress.summary(finish_reason, params.get("max_tokens"))

    def _chat_prompt(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        """Render the GGUF's own chat template in jinja2's sandbox, then tokenize it."""
        try:
            rendered = self._chat_formatter(messages=cast(Any, messages))
        except jinja2.exceptions.SecurityError as exc:
            raise InvalidRequest(
                f"the model's chat template tried something unsafe and was stopped: {exc}"
            ) from None
        except (ValueError, TypeError, jinja2.exceptions.TemplateError) as exc:
            raise InvalidRequest(
                f"the model's chat template rejected these messages: {exc}"
            ) from None
        prompt = rendered.prompt
        if not self.has_chat_template and self._add_bos:
            prompt = self.llm._model.token_get_text(self.llm.token_bos()) + prompt
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        stops = _as_list(rendered.stop) + ([] if self.has_chat_template else ["<|im_end|>"])
        return tokens, stops

    def _completion_prompt(self, params: dict[str, Any]) -> str | list[int]:
        prompt = params["prompt"]
        suffix = params.get("suffix")
        if suffix is None:
            # Strings are tokenized with special tokens parsed, so client-built FIM prompts work.
            return prompt
        return self._fim_tokens(prefix=prompt, suffix=suffix, extra=[])

    def _infill_prompt(self, params: dict[str, Any]) -> list[int]:
        return self._fim_tokens(
            prefix=params.get("input_prefix", "") + params.get("prompt", ""),
            suffix=params.get("input_suffix", ""),
            extra=params.get("input_extra") or [],
        )

    def _tok(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def _fim_tokens(self, *, prefix: str, suffix: str, extra: list[dict[str, str]]) -> list[int]:
        """Prefix-suffix-middle prompt from the model's own FIM ids (as llama.cpp's server)."""
        if not self.fim.supported:
            raise FimUnsupported(
                f"model '{self.model_id}' has no fill-in-the-middle tokens, so 'suffix' and "
                "/infill cannot work with it; serve a code model with FIM tokens "
                "(e.g. Qwen2.5-Coder) or send a prompt without 'suffix'",
                param="suffix",
            )
        tokens: list[int] = []
        if extra:
            if self.fim.rep >= 0:
                tokens += [self.fim.rep, *self._tok("project\n")]
            for chunk in extra:
                if self.fim.sep >= 0:
                    tokens.append(self.fim.sep)
                tokens += self._tok(f"{chunk.get('filename', '')}\n{chunk.get('text', '')}")
            if self.fim.sep >= 0:
                tokens.append(self.fim.sep)
        if self._add_bos:
            tokens.insert(0, self.llm.token_bos())
        return [
            *tokens,
            self.fim.pre,
            *self._tok(prefix),
            self.fim.suf,
            *self._tok(suffix),
            self.fim.mid,
        ]

    # --- embeddings ---------------------------------------------------------------------

    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, normalized embeddings from a second context over the same mmapped file."""
        with self._embed_lock:
            if self._embedder is None:
                n_ctx = min(self.llm.n_ctx(), 2048)
                self._embedder = Llama(
                    model_path=self.model_path,
                    embedding=True,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    n_ctx=n_ctx,
                    n_batch=n_ctx,
                    n_ubatch=n_ctx,
                    n_threads=self._threads,
                    n_threads_batch=self._threads,
                    n_gpu_layers=self._n_gpu_layers,
                    verbose=False,
                )
            vectors, count = self._embedder.embed(inputs, normalize=True, return_count=True)
        return vectors, count
