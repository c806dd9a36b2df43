"""Tool calls parsed from model output in each family's own format, whole and streamed."""

from __future__ import annotations

import json

import pytest
from llama_cpp.llama_grammar import LlamaGrammar

from assistantd.errors import InvalidRequest
from assistantd.worker import constraints
from assistantd.worker.answers import ToolWatch
from assistantd.worker.tool_calls import family_of, parse
from tests.support.templates import QWEN25_TEMPLATE

PARIS = {"city": "Paris"}

# What each family's models write (from their chat templates' own examples).
OUTPUTS = {
    "hermes": 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
    "\n</tool_call>",
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    "llama3": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
    "harmony": "<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city":"Paris"}<|call|>',
    "generic": '{"name": "get_weather", "arguments": {"city": "Paris"}}',
}


@pytest.mark.parametrize("family", sorted(OUTPUTS))
def test_each_family_parses_its_own_output(family: str) -> None:
    content, calls = parse(OUTPUTS[family], family)  # type: ignore[arg-type]
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == PARIS
    assert calls[0].id.startswith("call_")
    assert content == ("Let me look." if family == "hermes" else "")


def test_mistral_v11_format_and_several_calls() -> None:
    text = (
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}'
    )
    _, calls = parse(text, "mistral")
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Paris", "Rome"]


def test_plain_text_is_no_call() -> None:
    for family in OUTPUTS:
        content, calls = parse("The weather is nice.", family)  # type: ignore[arg-type]
        assert calls == [] and content == "The weather is nice."


def test_families_from_templates() -> None:
    assert family_of(QWEN25_TEMPLATE) == "hermes"
    assert family_of("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert family_of("{% if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]") == "mistral"
    assert family_of("{% if tools %}<|python_tag|>{% endif %}") == "llama3"
    assert family_of("{% if tools %}<|channel|>commentary{% endif %}") == "harmony"


def test_streaming_lets_text_through_and_holds_the_call() -> None:
    watch = ToolWatch("hermes", forced=False)
    pieces = ["Let me", " look.\n", "<tool", "_call>\n", '{"name": "get_weather", ',
              '"arguments": {"city": "Paris"}}', "\n</tool_call>"]  # fmt: skip
    sent = "".join(watch.feed(p) for p in pieces)
    assert sent == "Let me look.\n"
    content, calls = watch.finish()
    assert content == "" and [c.name for c in calls] == ["get_weather"]


def test_streaming_a_near_miss_is_released_as_text() -> None:
    watch = ToolWatch("hermes", forced=False)
    sent = "".join(watch.feed(p) for p in ["a <tool", "box> here"])
    content, calls = watch.finish()
    assert sent + content == "a <toolbox> here" and calls == []


def test_forced_call_grammar_compiles_and_bad_schemas_say_why() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    grammar = constraints.forced_tool_grammar([tool], "required")
    assert grammar and LlamaGrammar.from_string(grammar, verbose=False)
    assert constraints.forced_tool_grammar([tool], "auto") is None
    with pytest.raises(InvalidRequest) as caught:
        constraints.response_grammar(
            {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/nowhere"}}}
        )
    assert caught.value.param == "response_format.json_schema.schema"
