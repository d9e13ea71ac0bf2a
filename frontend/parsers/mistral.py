"""``mistral``: Mistral tool calls after ``[TOOL_CALLS]``, in both of Mistral's formats.

    [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]          (tokenizer v3 and earlier)
    [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}      (tokenizer v11 and later)

Text before ``[TOOL_CALLS]`` is content; text after the JSON is content too. Mistral's templates want
9-character alphanumeric call ids, so this parser makes those.
"""

from __future__ import annotations

import json
import secrets
import string

from .base import Segment, ToolCall, call_from_object, content, json_arguments, tool
from .blocks import Block, BlockToolParser
from .context import ParserContext

_decoder = json.JSONDecoder()
_ALPHABET = string.ascii_letters + string.digits


def mistral_call_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(9))


def _with_id(call: ToolCall) -> Segment:
    call.id = call.id or mistral_call_id()
    return tool(call)


def _rest(segments: list[Segment], text: str, end: int) -> list[Segment]:
    if text[end:].strip():
        segments.append(content(text[end:]))
    return segments


def _parse_array(text: str) -> list[Segment] | None:
    try:
        value, end = _decoder.raw_decode(text)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [call_from_object(item) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return _rest([_with_id(call) for call in calls if call is not None], text, end)


def _parse_named(text: str) -> list[Segment] | None:
    head, _, tail = text.partition("[ARGS]")
    name, _, call_id = head.partition("[CALL_ID]")
    name = name.strip()
    if not name or any(char.isspace() for char in name):
        return None
    try:
        value, end = _decoder.raw_decode(tail.lstrip())
    except ValueError:
        return None
    arguments = json_arguments(value)
    if arguments is None:
        return None
    end += len(tail) - len(tail.lstrip())
    return _rest([_with_id(ToolCall(name, arguments, call_id.strip()))], tail, end)


def parse_block(payload: str) -> list[Segment] | None:
    """One ``[TOOL_CALLS]`` block: a JSON list (or object) of calls, or ``name[ARGS]{...}``."""
    text = payload.strip()
    if text.startswith(("[", "{")):
        return _parse_array(text)
    if "[ARGS]" in text:
        return _parse_named(text)
    return None


def make(context: ParserContext) -> BlockToolParser:
    return BlockToolParser([Block("[TOOL_CALLS]", None, parse_block)])
