"""The parsers of one request in order (reasoning first, then tool calls), as one output stage."""

from __future__ import annotations

from .base import CONTENT, TOOL_CALL, OutputParser, Segment, content, merge, new_call_id


class ParseChain:
    """Runs text through each parser: a parser sees only the content its predecessor released.

    Tool calls get an id (unless the format carries one) in the order they are released; with
    ``parallel_tool_calls: false`` only the first call is kept.
    """

    __slots__ = ("_parsers", "_parallel", "tool_calls")

    def __init__(self, parsers: list[OutputParser], parallel_tool_calls: bool = True) -> None:
        self._parsers = parsers
        self._parallel = parallel_tool_calls
        self.tool_calls = 0

    def feed(self, text: str) -> list[Segment]:
        return self._run(text, final=False)

    def finish(self) -> list[Segment]:
        return self._run("", final=True)

    def _run(self, text: str, final: bool) -> list[Segment]:
        segments = [content(text)] if text else []
        for parser in self._parsers:
            released: list[Segment] = []
            for segment in segments:
                if segment.kind == CONTENT:
                    released.extend(parser.feed(segment.text))
                else:
                    released.append(segment)
            if final:
                released.extend(parser.finish())
            segments = released
        return self._number_calls(merge(segments))

    def _number_calls(self, segments: list[Segment]) -> list[Segment]:
        kept = []
        for segment in segments:
            if segment.kind == TOOL_CALL:
                if self.tool_calls and not self._parallel:
                    continue
                assert segment.call is not None
                segment.call.id = segment.call.id or new_call_id()
                self.tool_calls += 1
            kept.append(segment)
        return kept
