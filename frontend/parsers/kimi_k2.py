"""``kimi_k2``: Kimi K2 tool calls; the model writes its own call ids (``functions.NAME:INDEX``).

    <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>
    {"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>
"""

from __future__ import annotations

import re

from .base import Segment, ToolCall, json_arguments, loads, tool
from .blocks import Block, BlockToolParser
from .context import ParserContext

_CALL = re.compile(r"<\|tool_call_begin\|>(.*?)<\|tool_call_argument_begin\|>(.*?)<\|tool_call_end\|>", re.DOTALL)


def _call(call_id: str, body: str) -> ToolCall | None:
    call_id = call_id.strip()
    name = call_id.rsplit(":", 1)[0]
    name = name[len("functions."):] if name.startswith("functions.") else name
    arguments = json_arguments(loads(body.strip()))
    if not name or arguments is None:
        return None
    return ToolCall(name, arguments, call_id)


def parse_section(payload: str) -> list[Segment] | None:
    """Every complete call of a section; None when one is malformed or there is none."""
    calls = [_call(match.group(1), match.group(2)) for match in _CALL.finditer(payload)]
    if not calls or any(call is None for call in calls):
        return None
    return [tool(call) for call in calls if call is not None]


def make(context: ParserContext) -> BlockToolParser:
    return BlockToolParser([
        Block("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", parse_section),
        Block("<|tool_call_section_begin|>", "<|tool_call_section_end|>", parse_section),
    ])
