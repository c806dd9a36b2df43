"""Prompts as token ids: the GGUF's own chat template (sandboxed, with tools), raw completion
prompts with special tokens parsed, and fill-in-the-middle from the model's own FIM ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import jinja2
import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from assistantd.errors import FimUnsupported, InvalidRequest

# For base models without a template of their own.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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


class Prompts:
    """Builds every kind of prompt for one loaded model."""

    def __init__(self, llm: Llama, model_id: str) -> None:
        self.llm = llm
        self.model_id = model_id
        vocab = llm._model.vocab
        self.fim = FimTokens(
            pre=llama_cpp.llama_vocab_fim_pre(vocab),
            suf=llama_cpp.llama_vocab_fim_suf(vocab),
            mid=llama_cpp.llama_vocab_fim_mid(vocab),
            rep=llama_cpp.llama_vocab_fim_rep(vocab),
            sep=llama_cpp.llama_vocab_fim_sep(vocab),
        )
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.template: str | None = llm.metadata.get("tokenizer.chat_template")
        token_text = llm._model.token_get_text
        self._formatter = Jinja2ChatFormatter(
            template=self.template or CHATML_TEMPLATE,
            eos_token=token_text(llm.token_eos()),
            bos_token=token_text(llm.token_bos()) if self.add_bos else "",
            stop_token_ids=[llm.token_eos()],
        )

    def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> tuple[list[int], list[str]]:
        """Render the GGUF's own chat template in jinja2's sandbox, then tokenize it."""
        prompt, stops = self.render(messages, tools)
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        return tokens, stops

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> tuple[str, list[str]]:
        """The chat template's text (what llama-server's /apply-template answers) and stops."""
        try:
            rendered = self._formatter(messages=cast(Any, messages), tools=cast(Any, tools))
        except jinja2.exceptions.SecurityError as exc:
            raise InvalidRequest(
                f"the model's chat template tried something unsafe and was stopped: {exc}"
            ) from None
        except (ValueError, TypeError, jinja2.exceptions.TemplateError) as exc:
            raise InvalidRequest(
                f"the model's chat template rejected these messages: {exc}"
            ) from None
        prompt = rendered.prompt
        if self.template is None and self.add_bos:
            prompt = self.llm._model.token_get_text(self.llm.token_bos()) + prompt
        stop = rendered.stop
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return prompt, stops + ([] if self.template else ["<|im_end|>"])

    def completion(self, prompt: str, suffix: str | None) -> list[int]:
        if suffix is None:
            # Special tokens parsed, so client-built FIM prompts (Continue's) work.
            return self.llm.tokenize(prompt.encode("utf-8"), add_bos=self.add_bos, special=True)
        return self.fill_in_middle(prefix=prompt, suffix=suffix, extra=[], param="suffix")

    def infill(self, params: dict[str, Any]) -> list[int]:
        return self.fill_in_middle(
            prefix=params.get("input_prefix", "") + params.get("prompt", ""),
            suffix=params.get("input_suffix", ""),
            extra=params.get("input_extra") or [],
            param="input_suffix",
        )

    def _tok(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def fill_in_middle(
        self, *, prefix: str, suffix: str, extra: list[dict[str, str]], param: str
    ) -> list[int]:
        """Prefix-suffix-middle prompt from the model's own FIM ids (as llama.cpp's server)."""
        if not self.fim.supported:
            raise FimUnsupported(
                f"model '{self.model_id}' has no fill-in-the-middle tokens, so 'suffix' and "
                "/infill cannot work with it; serve a code model with FIM tokens "
                "(e.g. Qwen2.5-Coder) or send a prompt without 'suffix'",
                param=param,
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
        if self.add_bos:
            tokens.insert(0, self.llm.token_bos())
        return [
            *tokens,
            self.fim.pre,
            *self._tok(prefix),
            self.fim.suf,
            *self._tok(suffix),
            self.fim.mid,
        ]

    def text_of(self, prompt: str | list[int | str]) -> str:
        """A prompt given as text, token ids or both, as text (each run of ids at once, so a
        character split across ids survives)."""
        if isinstance(prompt, str):
            return prompt
        parts: list[str] = []
        ids: list[int] = []
        for part in [*prompt, ""]:  # the empty text at the end flushes the last run of ids
            if isinstance(part, int):
                ids.append(part)
                continue
            if ids:
                parts.append(self.detokenize_ids(ids))
                ids = []
            parts.append(part)
        return "".join(parts)

    def detokenize_ids(self, ids: list[int]) -> str:
        """Token ids of this model's vocabulary as text (for embeddings sent as ids)."""
        n_vocab = self.llm.n_vocab()
        bad = [i for i in ids if i >= n_vocab]
        if bad:
            raise InvalidRequest(
                f"token id {bad[0]} is beyond this model's vocabulary of {n_vocab}; token ids are "
                "read in the served model's vocabulary (LangChain's OpenAIEmbeddings sends "
                "OpenAI's: set check_embedding_ctx_length=False to send text)",
                param="input",
            )
        text = self.llm.detokenize(ids, special=True).decode("utf-8", "replace")
        if not text:
            raise InvalidRequest("these token ids stand for no text", param="input")
        return text
