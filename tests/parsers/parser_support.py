"""Helpers of the parser tests: run a parser whole and split at every boundary, compare the results."""

from __future__ import annotations

import json
from typing import Callable

from frontend.parsers.base import CONTENT, REASONING, TOOL_CALL, OutputParser, Segment, merge
from frontend.parsers.context import ParserContext
from frontend.parsers.registry import build_chain

Result = list[tuple]


def simplify(segments: list[Segment]) -> Result:
    """Segments as comparable tuples (call ids left out, arguments decoded)."""
    out: Result = []
    for segment in merge(segments):
        if segment.kind == TOOL_CALL:
            assert segment.call is not None
            out.append(("call", segment.call.name, json.loads(segment.call.arguments)))
        else:
            out.append(({CONTENT: "content", REASONING: "reasoning"}[segment.kind], segment.text))
    return out


def run(parser: OutputParser, pieces: list[str]) -> list[Segment]:
    segments: list[Segment] = []
    for piece in pieces:
        segments.extend(parser.feed(piece))
    segments.extend(parser.finish())
    return segments


def parse_everywhere(make: Callable[[], OutputParser], text: str) -> Result:
    """The unary result, after checking that every 2-way split and a char-by-char feed give the same."""
    unary = simplify(run(make(), [text]))
    for index in range(1, len(text)):
        split = simplify(run(make(), [text[:index], text[index:]]))
        assert split == unary, f"split at {index} ({text[:index]!r} | {text[index:]!r}):\n{split}\n!=\n{unary}"
    chars = simplify(run(make(), list(text)))
    assert chars == unary, f"char by char:\n{chars}\n!=\n{unary}"
    return unary


def chain_maker(tool_parser: str = "", reasoning_parser: str = "", *, tools: list[dict] | None = None,
                prompt_tail: str = "", enable_thinking: bool | None = None, forced: bool = False,
                function: str | None = None, parallel: bool = True) -> Callable[[], OutputParser]:
    """A factory of fresh chains as the chat handler builds them (tools active when ``tool_parser`` is set)."""
    context = ParserContext(tools or [], prompt_tail, enable_thinking)

    def make() -> OutputParser:
        chain = build_chain(tool_parser, reasoning_parser, context, tools_active=bool(tool_parser) or forced,
                            forced_function=function, forced=forced, parallel_tool_calls=parallel)
        assert chain is not None
        return chain

    return make


def call(name: str, **arguments) -> tuple:
    return ("call", name, arguments)
