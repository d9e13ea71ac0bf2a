"""``tool_choice: required`` or a named function: the output is the call, constrained by a JSON schema.

The engine gets the schema as ``response_format`` (Dynamo and vLLM do the same), so a worker with guided
decoding answers with bare JSON: the arguments object for a named function, ``[{"name", "parameters"}...]``
for ``required``. A worker that ignores the schema answers in the model's own markup, which the model's
tool-call parser reads instead. Either way the whole output is parsed at the end.
"""

from __future__ import annotations

from typing import Any

from .base import OutputParser, Segment, ToolCall, call_from_object, content, json_arguments, loads, merge, tool


class ForcedToolParser:
    """Buffers the whole output, then reads it as guided JSON, else with the model's parser, else as content."""

    def __init__(self, inner: OutputParser | None, function: str | None) -> None:
        self._inner = inner
        self._function = function
        self._parts: list[str] = []

    def feed(self, text: str) -> list[Segment]:
        self._parts.append(text)
        return []

    def finish(self) -> list[Segment]:
        text = "".join(self._parts)
        self._parts = []
        guided = self._guided(loads(text.strip()))
        if guided is not None:
            return guided
        if self._inner is not None:
            return merge(self._inner.feed(text) + self._inner.finish())
        return [content(text)] if text else []

    def _guided(self, value: Any) -> list[Segment] | None:
        if self._function is not None:
            arguments = json_arguments(value) if isinstance(value, dict) else None
            return [tool(ToolCall(self._function, arguments))] if arguments is not None else None
        if not isinstance(value, list) or not value:
            return None
        calls = [call_from_object(item) for item in value]
        if any(call is None for call in calls):
            return None
        return [tool(call) for call in calls if call is not None]


def forced_response_format(tools: list[dict[str, Any]], function: str | None, parallel: bool) -> dict[str, Any]:
    """The ``response_format`` that makes a guided-decoding engine produce the forced call(s)."""
    def parameters(definition: dict[str, Any]) -> dict[str, Any]:
        schema = definition.get("parameters")
        return schema if isinstance(schema, dict) and schema else {"type": "object"}

    if function is not None:
        definition = next(d for d in tools if d.get("name") == function)
        return {"type": "json_schema", "json_schema": {"name": function, "schema": parameters(definition)}}
    variants = [{"type": "object", "properties": {"name": {"type": "string", "enum": [d["name"]]},
                                                  "parameters": parameters(d)},
                 "required": ["name", "parameters"]} for d in tools]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": variants}}
    if not parallel:
        schema["maxItems"] = 1
    return {"type": "json_schema", "json_schema": {"name": "tool_calls", "schema": schema}}
