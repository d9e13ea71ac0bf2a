"""``llama3_json``: Llama 3.1/3.3 JSON tool calls, the whole output (after an optional ``<|python_tag|>``).

    {"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}

Only an output that starts with ``{`` (or holds ``<|python_tag|>``) can be a call, so JSON inside prose stays
content. Calls are separated by ``;``; text after the last call is content.
"""

from __future__ import annotations

import json

from .base import Segment, call_from_object, content, tool
from .blocks import Block, BlockToolParser
from .context import ParserContext

_decoder = json.JSONDecoder()


def parse_calls(text: str) -> list[Segment] | None:
    """Consecutive JSON call objects separated by ``;``; the rest is content. None when the first is no call."""
    segments: list[Segment] = []
    position = len(text) - len(text.lstrip())
    while position < len(text):
        try:
            obj, end = _decoder.raw_decode(text, position)
        except ValueError:
            break
        call = call_from_object(obj)
        if call is None:
            break
        segments.append(tool(call))
        position = _skip_separator(text, end)
    if not segments:
        return None
    if position < len(text):
        segments.append(content(text[position:]))
    return segments


def _skip_separator(text: str, position: int) -> int:
    """Past whitespace and one ``;`` (when another object follows)."""
    rest = text[position:].lstrip()
    if rest.startswith(";") and rest[1:].lstrip().startswith("{"):
        rest = rest[1:].lstrip()
    elif rest.startswith("{"):
        pass
    else:
        return position
    return len(text) - len(rest)


def make(context: ParserContext) -> BlockToolParser:
    return BlockToolParser([
        Block("<|python_tag|>", None, parse_calls),
        Block("{", None, parse_calls, anchored=True, keep_start=True),
    ])
