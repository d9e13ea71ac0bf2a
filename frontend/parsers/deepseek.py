"""``deepseek_v3``: DeepSeek V3 / R1 tool calls (V3.1's shorter call form is accepted too).

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
    ```json
    {"city": "Paris"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

    V3.1:  <｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>

The markers use U+FF5C (fullwidth vertical line) and U+2581 (lower one eighth block), as DeepSeek's tokenizer.
"""

from __future__ import annotations

import re

from .base import Segment, ToolCall, json_arguments, loads, tool
from .blocks import Block, BlockToolParser
from .context import ParserContext

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"

_CALL = re.compile(re.escape(CALL_BEGIN) + r"(.*?)" + re.escape(CALL_END), re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _call(text: str) -> ToolCall | None:
    head, sep, body = text.partition(SEP)
    if not sep:
        return None
    head = head.strip()
    if head == "function":  # V3: the name is on the first line, the arguments in a json fence
        name, _, body = body.partition("\n")
        fenced = _FENCE.match(body)
        body = fenced.group(1) if fenced else body
    else:
        name = head
    name = name.strip()
    arguments = json_arguments(loads(body.strip()))
    if not name or arguments is None:
        return None
    return ToolCall(name, arguments)


def parse_section(payload: str) -> list[Segment] | None:
    """Every complete call of a tool-calls section; None when one is malformed or there is none."""
    calls = [_call(match.group(1)) for match in _CALL.finditer(payload)]
    if not calls or any(call is None for call in calls):
        return None
    return [tool(call) for call in calls if call is not None]


def make(context: ParserContext) -> BlockToolParser:
    return BlockToolParser([Block(CALLS_BEGIN, CALLS_END, parse_section)])
