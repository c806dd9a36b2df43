"""The model inside the worker: one loaded GGUF, a slot engine that decodes every request in
one batch, prompts built from the model's own template and FIM ids, embeddings beside it.

Runs only inside the worker (never in the daemon), so a native crash or an OOM kill takes the
worker down and leaves the daemon serving.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

import llama_cpp
from llama_cpp import Llama

from assistantd.errors import ContextOverflow, InvalidRequest, QueueFull
from assistantd.vocab import GenerationKind
from assistantd.worker import constraints, tool_calls
from assistantd.worker.allocations import capture
from assistantd.worker.answers import Answer
from assistantd.worker.draft_model import DraftModel
from assistantd.worker.event_sink import EventOut, EventSink, reported
from assistantd.worker.model_params import Placement, placed
from assistantd.worker.prompts import Prompts
from assistantd.worker.protocol import (
    PROMPT_CACHE_MAX,
    SAMPLING_KEYS,
    Event,
    Sampling,
    priority_of,
)
from assistantd.worker.slot_state import PromptTooLong
from assistantd.worker.slots import QueueFull as SlotsFull
from assistantd.worker.slots import SlotEngine, SlotEngineError, SlotRequest

# Requests waiting inside the worker; the daemon's own queue bounds what reaches it.
WORKER_QUEUE = 256


class Engine:
    """One loaded GGUF with `n_slots` sequences decoded together."""

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int,
        threads: int,
        n_gpu_layers: int,
        model_id: str,
        n_slots: int,
        placement: Placement | None = None,
        speculative: str = "off",
        draft_model: str | None = None,
        defaults: dict[str, Any] | None = None,
        prompt_cache_bytes: int = PROMPT_CACHE_MAX,
    ) -> None:
        self.model_path = model_path
        self.model_id = model_id
        self.n_ctx = n_ctx
        self.n_slots = n_slots
        self.speculative = speculative  # worker.speculation.MODES
        self.defaults = defaults or {}  # sampling for requests that set none (seed, temperature)
        self._threads = threads
        self._n_gpu_layers = n_gpu_layers
        self.placement = placement or Placement()
        self.allocations = capture()
        self.llm = self._weights(model_path)
        self.prompts = Prompts(self.llm, model_id)
        self.tool_family = tool_calls.family_of(self.prompts.template)
        draft = None
        if draft_model:
            draft = DraftModel(
                self._weights(draft_model),
                llama_cpp.llama_model_get_vocab(self.llm._model.model),
                n_slots=n_slots,
                n_ctx_per_slot=n_ctx,
                threads=threads,
            )
        self.draft_model = draft_model
        self.slots = SlotEngine(
            self.llm,
            n_slots=n_slots,
            n_ctx_per_slot=n_ctx,
            threads=threads,
            max_queue=WORKER_QUEUE,
            draft=draft,
            prompt_cache_bytes=prompt_cache_bytes,
        )
        self._embedder: Llama | None = None
        self._embed_lock = threading.Lock()
        # event_sink.py: where the decode threads take every core, events are shaped and
        # written by the engine thread; where a core is free, by handler threads meanwhile.
        self.shapes_inline = not self.gpu_offload and threads >= _usable_cores()

    @property
    def gpu_offload(self) -> bool:
        return self._n_gpu_layers != 0 and bool(self.placement.devices)

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_ctx_train": self.llm._model.n_ctx_train(),
            "n_slots": self.n_slots,
            "fim": self.prompts.fim.supported,
            "tools": self.tool_family,
            "chat_template": "gguf" if self.prompts.template else "chatml (the model has none)",
            "gpu_offload": self.gpu_offload,
            "devices": list(self.placement.devices or ()),
            "n_gpu_layers": self._n_gpu_layers,
            "n_cpu_moe": self.placement.n_cpu_moe,
            "allocated": self.allocations.to_json(),
            "threads": self._threads,
            "draft_model": self.draft_model,
        }

    def close(self) -> None:
        self.slots.close()

    def _weights(self, path: str) -> Llama:
        """The weights, vocabulary and metadata of a GGUF, placed as planned. The Llama object's
        own context is kept tiny: the slot engine (and a draft model) decode in their own."""
        with placed(self.placement):
            return Llama(
                model_path=path,
                n_ctx=64,
                n_batch=64,
                n_threads=self._threads,
                n_gpu_layers=self._n_gpu_layers,
                verbose=False,
            )

    def _tokens_of(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # --- generation ---------------------------------------------------------------------

    def generate(
        self, kind: str, params: dict[str, Any], cancel: threading.Event
    ) -> Generator[Event, None, None]:
        """Chunk events as tokens come, then one end event with usage and timings."""
        request, answer = self._request(kind, params, cancel)
        events = self._submit(request)
        try:
            yield from answer.events(events)
        except SlotEngineError as exc:
            raise reported(exc) from None
        finally:
            cancel.set()  # a consumer that stops early frees the slot
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def generate_into(
        self, kind: str, params: dict[str, Any], cancel: threading.Event, out: EventOut
    ) -> None:
        """The same events handed to `out` on the engine thread as they come (shapes_inline);
        what is wrong with the request is raised here, before any."""
        request, answer = self._request(kind, params, cancel)
        self._submit(request, EventSink(answer, out, cancel))

    def _request(
        self, kind: str, params: dict[str, Any], cancel: threading.Event
    ) -> tuple[SlotRequest, Answer]:
        """The slot request for a generation, and the Answer that shapes its events."""
        grammar: str | None = None
        family = None
        forced = False
        stops = _as_list(params.get("stop"))
        if kind == "chat":
            tools = params.get("tools") or None
            choice = params.get("tool_choice")
            messages = params["messages"]
            if tools and choice != "none":
                forced = choice == "required" or isinstance(choice, dict)
                family = "generic" if forced or self.tool_family is None else self.tool_family
                grammar = constraints.forced_tool_grammar(tools, choice) if forced else None
                if self.tool_family is None:  # no tools in the template: llama-server's generic
                    messages = tool_calls.generic_messages(messages, tools)
            prompt, template_stops = self.prompts.chat(
                messages, tools if self.tool_family else None
            )
            stops += template_stops
            grammar = grammar or constraints.response_grammar(params.get("response_format"))
        elif kind == "completion":
            prompt = self.prompts.completion(params["prompt"], params.get("suffix"))
        elif kind == "infill":
            prompt = self.prompts.infill(params)
        else:
            raise InvalidRequest(f"unknown generation kind {kind!r}")
        grammar = grammar or constraints.request_grammar(params)
        max_tokens = params.get("max_tokens")
        n = int(params.get("n") or 1)
        request = SlotRequest(
            prompt=prompt,
            sampling=_sampling({**self.defaults, **_given(params)}, grammar, self._tokens_of),
            max_tokens=max_tokens,  # 0: evaluate (and cache) the prompt, say nothing
            stop=stops,
            priority=priority_of(cast(GenerationKind, kind), params),
            n=n,
            t_max_predict_ms=params.get("t_max_predict_ms"),
            cancelled=cancel,
            logprobs=params.get("logprobs"),
            speculate=self.speculative,
            kind=kind,
        )
        answer = Answer(
            chat=kind == "chat",
            model_id=self.model_id,
            prompt_tokens=len(prompt),
            n=n,
            family=family,
            forced_call=forced,
        )
        return request, answer

    def _submit(self, request: SlotRequest, sink: EventSink | None = None) -> Iterator[dict]:
        try:
            return self.slots.submit(request, sink)
        except SlotsFull:
            raise QueueFull("the model worker's queue is full; retry in a moment") from None
        except PromptTooLong:
            n_ctx = self.slots.n_ctx_slot
            raise ContextOverflow(
                f"the prompt has {len(request.prompt)} tokens, which does not fit this model's "
                f"context of {n_ctx} tokens; shorten it",
                param="prompt" if request.kind != "chat" else "messages",
                n_prompt_tokens=len(request.prompt),
                n_ctx=n_ctx,
            ) from None
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    # --- text: llama-server's /tokenize, /detokenize, /apply-template -----------------------

    def text(self, body: dict[str, Any]) -> dict[str, Any]:
        """Tokens of a text, text of tokens, or a chat rendered by the model's template."""
        op = body.get("op")
        if op == "tokenize":
            ids = self.llm.tokenize(
                str(body.get("content", "")).encode("utf-8"),
                add_bos=bool(body.get("add_special")) and self.prompts.add_bos,
                special=bool(body.get("parse_special", True)),
            )
            if not body.get("with_pieces"):
                return {"tokens": ids}
            return {"tokens": [{"id": i, "piece": _piece(self.llm, i)} for i in ids]}
        if op == "detokenize":
            ids = [int(t) for t in body.get("tokens") or []]
            return {"content": self.prompts.detokenize_ids(ids) if ids else ""}
        if op == "text_of":  # a prompt of token ids and texts, as text
            return {"content": self.prompts.text_of(body.get("prompt") or "")}
        if op == "apply_template":
            prompt, _ = self.prompts.render(body.get("messages") or [], body.get("tools"))
            return {"prompt": prompt}
        raise InvalidRequest(f"unknown text operation '{op}'")

    # --- embeddings ---------------------------------------------------------------------

    def embed(self, inputs: list[str | list[int | str]]) -> tuple[list[list[float]], int]:
        """Pooled as the GGUF declares, normalized embeddings from a second context over the
        same mmapped file, computed on the slot engine's thread (engine_calls.py); an input
        longer than that context is refused, not cut (its vector would lie)."""
        texts = [self.prompts.text_of(item) for item in inputs]
        with self._embed_lock:
            if self._embedder is None:
                n_ctx = min(self.n_ctx, 2048)
                with placed(self.placement):
                    self._embedder = self._embedding_model(n_ctx)
            limit = self._embedder.n_ctx()
            # The same text once: one vector for it (rows of one batch differ in the last bits).
            # Counted as embed() tokenizes it, once per distinct text.
            sizes = {t: len(self._embedder.tokenize(t.encode("utf-8"))) for t in texts}
            for i, text in enumerate(texts):
                if not sizes[text]:
                    raise InvalidRequest(
                        f"input {i} holds no tokens; send at least one character or token",
                        param="input",
                    )
                if sizes[text] > limit:
                    raise InvalidRequest(
                        f"input {i} is too large to process: {sizes[text]} tokens, more than the "
                        f"embeddings context of {limit}; split it into smaller pieces",
                        param="input",
                    )
            unique, embedder = list(sizes), self._embedder
            # On the engine thread: from this one, the model would decode slower for good.
            vectors = self.slots.call(
                lambda: embedder.embed(unique, normalize=True, truncate=False)
            )
        by_text = dict(zip(unique, vectors, strict=True))
        return [by_text[t] for t in texts], sum(sizes[t] for t in texts)

    def _embedding_model(self, n_ctx: int) -> Llama:
        """Pooled as the GGUF declares (an embedding model was trained with its own: mean, CLS
        or last token); mean for a chat model, which declares none."""
        meta = self.llm.metadata
        declared = meta.get(f"{meta.get('general.architecture')}.pooling_type", "")
        pooling = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        pooled = (pooling, llama_cpp.LLAMA_POOLING_TYPE_CLS, llama_cpp.LLAMA_POOLING_TYPE_LAST)
        if declared.isdigit() and int(declared) in pooled:  # not "none" (0) nor "rank" (4)
            pooling = int(declared)
        return Llama(
            model_path=self.model_path,
            embedding=True,
            pooling_type=pooling,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=self._threads,
            n_threads_batch=self._threads,
            n_gpu_layers=self._n_gpu_layers,
            verbose=False,
        )


def _piece(llm: Llama, token: int) -> str | list[int]:
    """A token's text, or its bytes when they are not valid UTF-8 alone (as llama-server)."""
    raw = llm.detokenize([token], special=True)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


def _as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _given(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _sampling(
    params: dict[str, Any], grammar: str | None, tokens_of: Callable[[str], list[int]]
) -> Sampling:
    """The request's sampling, with llama.cpp's defaults for what it leaves out."""
    keys = [k for k in SAMPLING_KEYS if k not in ("max_tokens", "stop")]
    values = {k: params[k] for k in keys if params.get(k) is not None}
    bias = _logit_bias(params.get("logit_bias"), tokens_of)
    return Sampling(**values, grammar=grammar, logit_bias=bias)


def _logit_bias(
    given: Any, tokens_of: Callable[[str], list[int]]
) -> list[tuple[int, float]] | None:
    """OpenAI's {"id": bias} or llama.cpp's [[id, bias]] (false: never this token); a text in
    place of an id biases each of its tokens, as llama-server does."""
    if not given:
        return None
    pairs = given.items() if isinstance(given, dict) else given
    try:
        out = []
        for t, b in pairs:
            bias = -1e30 if b is False else float(b)
            ids = [int(t)] if isinstance(t, int) or str(t).isdigit() else tokens_of(str(t))
            out += [(i, bias) for i in ids]
        return out
    except (TypeError, ValueError):
        raise InvalidRequest(
            'logit_bias: give token ids (or texts) with biases, {"15043": -1.0} or '
            '[[15043, -1.0]] or [[" hello", false]]',
            param="logit_bias",
        ) from None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
