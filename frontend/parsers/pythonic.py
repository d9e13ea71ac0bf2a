"""``pythonic``: Llama 3.2 / Llama 4 calls written as a Python list of function calls.

    [get_weather(city="Paris", days=3), get_time(tz="UTC")]

The list must open the output (or follow ``<|python_start|>``, closed by ``<|python_end|>``). Arguments must
be keyword arguments with literal values; anything else makes the block plain content. Text after the
closing ``]`` is content. Parsed with :mod:`ast` (never evaluated).
"""

from __future__ import annotations

import ast
import json

from .base import Segment, ToolCall, content, tool
from .blocks import Block, BlockToolParser
from .context import ParserContext


def _list_end(text: str) -> int:
    """Index just past the bracket that closes the list opening ``text`` (0 when it does not close)."""
    depth, quote, escaped = 0, "", False
    for index, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return index + 1
    return 0


def _call(node: ast.expr) -> ToolCall | None:
    if not isinstance(node, ast.Call) or node.args:
        return None
    name = _dotted_name(node.func)
    if name is None:
        return None
    arguments = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            return None
        try:
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    try:
        return ToolCall(name, json.dumps(arguments, ensure_ascii=False))
    except (TypeError, ValueError):  # a literal JSON cannot hold (a set, bytes, a complex number)
        return None


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = _dotted_name(node.value)
        return f"{parent}.{node.attr}" if parent else None
    return None


def parse_list(text: str) -> list[Segment] | None:
    """The calls of the list at the start of ``text`` and the rest as content; None when it is no call list."""
    stripped = text.lstrip()
    end = _list_end(stripped)
    if not end:
        return None
    try:
        tree = ast.parse(stripped[:end], mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(tree.body, ast.List) or not tree.body.elts:
        return None
    calls = [_call(element) for element in tree.body.elts]
    if any(call is None for call in calls):
        return None
    segments = [tool(call) for call in calls if call is not None]
    if stripped[end:]:
        segments.append(content(stripped[end:]))
    return segments


def make(context: ParserContext) -> BlockToolParser:
    return BlockToolParser([
        Block("<|python_start|>", "<|python_end|>", parse_list),
        Block("[", None, parse_list, anchored=True, keep_start=True),
    ])
