"""Tool calls in model output, for the template families that write them (as llama-server and
Ollama parse them): Qwen/Hermes `<tool_call>` JSON, Mistral `[TOOL_CALLS]`, Llama 3 JSON
(optionally after `<|python_tag|>`), gpt-oss harmony `to=functions.NAME … <|message|>`, and the
bare JSON a grammar-forced call produces."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["hermes", "mistral", "llama3", "harmony", "generic"]

# Text a tool call may start with, per family; output that starts otherwise is plain content.
OPENERS: dict[Family, tuple[str, ...]] = {
    "hermes": ("<tool_call>",),
    "mistral": ("[TOOL_CALLS]",),
    "llama3": ("<|python_tag|>", "{"),
    "harmony": ("<|channel|>commentary to=", "<|start|>assistant<|channel|>commentary to=", " to="),
    "generic": ("{", "["),
}


def family_of(template: str | None) -> Family | None:
    """Which tool-call format a chat template writes, or None if it takes no tools."""
    if not template or "tools" not in template:
        return None
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|channel|>" in template:
        return "harmony"
    if "<|python_tag|>" in template or "ipython" in template:
        return "llama3"
    return "generic"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str

    def to_json(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def _call(name: Any, arguments: Any) -> ToolCall | None:
    if not isinstance(name, str) or not name:
        return None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(
        name, json.dumps(arguments, ensure_ascii=False), "call_" + uuid.uuid4().hex[:24]
    )


def _from_objects(objects: Any) -> list[ToolCall]:
    items = objects if isinstance(objects, list) else [objects]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return []
        if "tool_call" in item and isinstance(item["tool_call"], dict):
            item = item["tool_call"]
        if "function" in item and isinstance(item["function"], dict):
            item = item["function"]
        call = _call(item.get("name"), item.get("arguments", item.get("parameters")))
        if call is None:
            return []
        calls.append(call)
    return calls


def _json_prefix(text: str) -> tuple[Any, str] | None:
    """The JSON value at the start of `text` and what follows it."""
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    return value, text[end:]


def parse(text: str, family: Family) -> tuple[str, list[ToolCall]]:
    """(content, tool calls) from a whole answer; content is what is not a call."""
    stripped = text.strip()
    if family == "hermes":
        calls: list[ToolCall] = []
        for body in re.findall(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", stripped, re.S):
            parsed = _json_prefix(body)
            calls += _from_objects(parsed[0]) if parsed else []
        content = re.sub(r"<tool_call>.*?(?:</tool_call>|$)", "", stripped, flags=re.S).strip()
        if calls:
            return content, calls
    elif family == "mistral" and "[TOOL_CALLS]" in stripped:
        before, _, after = stripped.partition("[TOOL_CALLS]")
        parsed = _json_prefix(after.strip())
        if parsed:
            return before.strip(), _from_objects(parsed[0])
        named = re.findall(r"([A-Za-z0-9_.-]+)\[ARGS\](\{.*?\})(?=\[TOOL_CALLS\]|$)", after, re.S)
        calls = [c for c in (_call(n, a) for n, a in named) if c]
        if calls:
            return before.strip(), calls
    elif family == "harmony":
        found = re.findall(
            r"to=functions\.([A-Za-z0-9_.-]+).*?<\|message\|>(.*?)(?:<\|call\|>|$)", stripped, re.S
        )
        calls = [c for c in (_call(n, a.strip()) for n, a in found) if c]
        if calls:
            return "", calls
    else:  # llama3 and generic: the answer is the JSON call(s), maybe after <|python_tag|>
        body = stripped.removeprefix("<|python_tag|>").strip()
        parsed = _json_prefix(body)
        if parsed and not parsed[1].strip():
            calls = _from_objects(parsed[0])
            if calls:
                return "", calls
    return text, []


def may_open(text: str, family: Family) -> bool:
    """Whether the answer so far could still turn out to be a tool call (so hold it back)."""
    head = text.lstrip()
    if not head:
        return True
    return any(o.startswith(head) or head.startswith(o) for o in OPENERS[family])


GENERIC_NOTE = (
    "You can call these tools. To call one, answer with only a JSON object "
    '{{"name": <the tool\'s name>, "arguments": <an object of its parameters>}}.\nTools:\n{spec}'
)


def generic_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For a chat template without tool support (llama-server's generic format): the tools
    described in the system message, earlier calls written as the JSON they were asked in,
    tool results as user turns."""
    spec = json.dumps([t["function"] for t in tools], indent=1)
    note = GENERIC_NOTE.format(spec=spec)
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("tool_calls"):
            calls = [
                json.dumps({"name": c["function"]["name"], "arguments": _arguments(c)})
                for c in message["tool_calls"]
            ]
            said = [message["content"]] if message.get("content") else []
            out.append({"role": "assistant", "content": "\n".join(said + calls)})
        elif message.get("role") == "tool":
            out.append({"role": "user", "content": f"Tool result: {message.get('content', '')}"})
        else:
            out.append(message)
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": f"{out[0].get('content', '')}\n\n{note}"}
    else:
        out.insert(0, {"role": "system", "content": note})
    return out


def _arguments(call: dict[str, Any]) -> Any:
    arguments = call["function"].get("arguments")
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
