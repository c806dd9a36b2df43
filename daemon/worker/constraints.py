"""Grammars that constrain decoding: JSON output (`response_format`) and forced tool calls
(`tool_choice: "required"` or a named function), built with llama-cpp-python's own
JSON-schema-to-GBNF converter, so even a tiny model answers valid JSON."""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from assistantd.errors import InvalidRequest

# The converter's string character allows raw control characters (a newline inside a JSON
# string), which no JSON parser accepts; llama.cpp's own grammars exclude them.
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'


def _gbnf(schema: dict[str, Any], param: str) -> str:
    try:
        return json_schema_to_gbnf(json.dumps(schema)).replace(_LOOSE_CHAR, _STRICT_CHAR)
    except Exception as exc:  # the converter raises bare exceptions of several kinds
        raise InvalidRequest(
            f"{param}: this JSON schema cannot be turned into a grammar ({exc}); "
            "simplify it (supported: type, properties, required, items, enum, const, "
            "anyOf/oneOf, $ref to $defs, string formats)",
            param=param,
        ) from None


def response_grammar(response_format: dict[str, Any] | None) -> str | None:
    """`json_object` → any JSON object; `json_schema` → that schema; `text` → none."""
    if not response_format or response_format.get("type") == "text":
        return None
    if response_format["type"] == "json_object":  # a schema beside it: llama-server reads it
        schema = response_format.get("schema")
        return _gbnf(schema, "response_format.schema") if isinstance(schema, dict) else JSON_GBNF
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "response_format.json_schema.schema must be a JSON schema object",
            param="response_format",
        )
    return _gbnf(schema, "response_format.json_schema.schema")


def request_grammar(params: dict[str, Any]) -> str | None:
    """llama-server's top-level `grammar` (GBNF as given) or `json_schema`."""
    if params.get("grammar"):
        return str(params["grammar"])
    schema = params.get("json_schema")
    if isinstance(schema, dict):
        return _gbnf(schema, "json_schema")
    return None


def forced_tool_grammar(tools: list[dict[str, Any]], choice: Any) -> str | None:
    """For `required` or a named function: output must be one call, as
    `{"name": ..., "arguments": {...}}` with arguments valid for that tool's schema."""
    if choice == "required":
        chosen = tools
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = choice["function"]["name"]
        chosen = [t for t in tools if t["function"]["name"] == name]
    else:
        return None
    variants = []
    for tool in chosen:
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
            }
        )
    schema = variants[0] if len(variants) == 1 else {"oneOf": variants}
    return _gbnf(schema, "tools")
