"""Tools and structured output through the real daemon: the tools go into the model's own
template, a forced call is constrained by a grammar from the tool's schema, JSON output by
`response_format` (real model, real template)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.support.daemons import Daemon

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_code",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def client(daemon: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.v1, api_key="unused", max_retries=0, timeout=120)


def model_of(daemon: Daemon) -> str:
    return client(daemon).models.list().data[0].id


def test_a_named_tool_choice_returns_valid_arguments(smol_tools: Daemon) -> None:
    reply = client(smol_tools).chat.completions.create(
        model=model_of(smol_tools),
        messages=ASK,
        tools=[WEATHER, SEARCH],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str)
    assert args["unit"] in ("celsius", "fahrenheit")


def test_required_tool_choice_streams_tool_call_deltas(smol_tools: Daemon) -> None:
    stream = client(smol_tools).chat.completions.create(
        model=model_of(smol_tools),
        messages=[{"role": "user", "content": "Find where parse_config is defined."}],
        tools=[WEATHER, SEARCH],
        tool_choice="required",
        max_tokens=64,
        temperature=0,
        stream=True,
    )
    calls, finish = [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert len(calls) >= 1
    name = calls[0].function.name
    args = json.loads(calls[0].function.arguments)
    assert name in ("get_weather", "search_code")
    required = WEATHER if name == "get_weather" else SEARCH
    assert set(required["function"]["parameters"]["required"]) <= set(args)


def test_tool_history_renders_through_the_template(smol_tools: Daemon) -> None:
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    reply = client(smol_tools).chat.completions.create(
        model=model_of(smol_tools), messages=history, tools=[WEATHER], max_tokens=16
    )
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert reply.usage.prompt_tokens > 100  # the tools and the tool result were rendered


def test_a_model_without_tool_support_calls_tools_in_the_generic_format(smol: Daemon) -> None:
    """SmolLM2's own template has no tools: they are described in the system message (as
    llama-server's generic format does) and a forced call is constrained to valid JSON."""
    api = client(smol)
    forced = api.chat.completions.create(
        model=model_of(smol), messages=ASK, tools=[WEATHER], tool_choice="required",
        max_tokens=64,
    )  # fmt: skip
    [call] = forced.choices[0].message.tool_calls
    assert forced.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert forced.usage.prompt_tokens > 60  # the tool's description went into the prompt
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}
    history = [*ASK, forced.choices[0].message.model_dump(exclude_none=True), result]
    plain = api.chat.completions.create(
        model=model_of(smol), messages=history, tools=[WEATHER], max_tokens=8
    )
    choice = plain.choices[0]
    assert choice.message.content is not None or choice.message.tool_calls


def test_json_object_output_parses(smol: Daemon) -> None:
    reply = client(smol).chat.completions.create(
        model=model_of(smol),
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=80,
        temperature=0,
    )
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:  # cut by max_tokens: still the start of a JSON object
        assert reply.choices[0].message.content.lstrip().startswith("{")


def test_json_schema_output_follows_the_schema(smol: Daemon) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = client(smol).chat.completions.create(
        model=model_of(smol),
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
        max_tokens=60,
        temperature=0,
    )
    person = json.loads(reply.choices[0].message.content)
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)


def test_invalid_requests_name_the_problem(smol: Daemon) -> None:
    api = client(smol)
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "schema"),
        ({"top_logprobs": 2}, "logprobs"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}},
          "tools": [WEATHER]}, "nope"),
    ]  # fmt: skip
    for extra, word in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(model=model_of(smol), messages=ASK, **extra)
        assert word in caught.value.message, caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(
            model=model_of(smol),
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]}],
        )  # fmt: skip
    assert "text only" in caught.value.message


def test_schema_grammars_keep_control_characters_out_of_strings() -> None:
    """A raw newline inside a JSON string is invalid JSON (the llm CLI's --schema failed on
    one): strings in schema grammars take llama.cpp's own character class."""
    from assistantd.worker.constraints import response_grammar

    grammar = response_grammar(
        {"type": "json_schema", "json_schema": {"schema": {"type": "object",
         "properties": {"name": {"type": "string"}}}}}
    )  # fmt: skip
    assert grammar is not None and 'char ::= [^"\\\\\\x7F\\x00-\\x1F]' in grammar
