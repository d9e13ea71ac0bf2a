"""``hermes``: Hermes / Qwen2.5 / Qwen3 tool calls, one JSON object per ``<tool_call>`` block.

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
"""

from __future__ import annotations

from .base import Segment, call_from_object, loads, tool
from .blocks import Block, BlockToolParser
from .context import ParserContext


def parse_block(payload: str) -> list[Segment] | None:
    """The call of one block; None when the JSON is malformed or not a call."""
    call = call_from_object(loads(payload.strip()))
    return [tool(call)] if call is not None else None


def make(context: ParserContext) -> BlockToolParser:
    return BlockToolParser([Block("<tool_call>", "</tool_call>", parse_block)])
