"""``qwen3_coder``: Qwen3-Coder's XML tool calls; parameter values are converted by the tool's JSON schema.

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

A ``<function=...>`` without the surrounding ``<tool_call>`` is accepted too. A parameter whose schema type
is not a string is parsed as JSON (then as a Python literal); without a schema the value stays a string.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from .base import Segment, ToolCall, tool
from .blocks import Block, BlockToolParser
from .context import ParserContext

_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|$)", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|$)", re.DOTALL)


def _trim(value: str) -> str:
    """Drop the one newline the format puts after the opening and before the closing tag."""
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


def _literal(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def convert(value: str, schema: dict[str, Any] | None) -> Any:
    """A parameter's value as its schema's type; a string when there is no schema or it does not parse."""
    kind = schema.get("type") if schema else None
    if kind is None or kind == "string" or (isinstance(kind, list) and "string" in kind):
        return value
    if kind == "boolean":
        lowered = value.strip().lower()
        return {"true": True, "false": False}.get(lowered, value)
    if kind == "null" and value.strip().lower() in ("null", "none"):
        return None
    parsed = _literal(value.strip())
    if kind == "integer" and isinstance(parsed, float) and parsed.is_integer():
        return int(parsed)
    return parsed if _serialisable(parsed) else value


def _serialisable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def parse_functions(text: str, context: ParserContext) -> list[Segment] | None:
    """Every ``<function=...>`` of ``text`` as a call; None when there is none."""
    calls = []
    for match in _FUNCTION.finditer(text):
        name = match.group(1).strip()
        if not name:
            return None
        arguments = {}
        for parameter in _PARAMETER.finditer(match.group(2)):
            key = parameter.group(1).strip()
            arguments[key] = convert(_trim(parameter.group(2)), context.parameter_schema(name, key))
        calls.append(tool(ToolCall(name, json.dumps(arguments, ensure_ascii=False))))
    return calls or None


def make(context: ParserContext) -> BlockToolParser:
    return BlockToolParser([
        Block("<tool_call>", "</tool_call>", lambda payload: parse_functions(payload, context)),
        Block("<function=", "</function>", lambda payload: parse_functions("<function=" + payload, context)),
    ])
