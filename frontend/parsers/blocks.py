"""The streaming engine behind every marker-delimited tool-call format.

A format is a list of :class:`Block`s: a start marker, an end marker (or none: the block runs to the end of
the output, or to the next occurrence of its start marker) and a function that parses the text between them
into segments. Outside blocks text is content, minus any suffix that could still become a start marker
(held back, never leaked). Inside a block everything is buffered until the block closes, then parsed whole:
a valid block becomes tool calls, a malformed one is released verbatim as content. Whitespace right before
or after a tool call is dropped, so ``"Sure.\\n\\n<tool_call>..."`` gives the content ``"Sure."``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .base import TOOL_CALL, Segment, ToolCall, content, find_first, partial_suffix, tool

ParseBlock = Callable[[str], "list[Segment] | None"]


@dataclass(frozen=True)
class Block:
    """One kind of tool-call block of a format."""

    start: str
    end: str | None
    parse: ParseBlock
    anchored: bool = False  # only at the very start of the output (after whitespace)
    keep_start: bool = False  # the start marker is part of the payload (e.g. the ``[`` of a list)


class BlockToolParser:
    """A tool-call parser for formats made of :class:`Block`s; see the module docstring."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        self._blocks = {block.start: block for block in blocks}
        self._anchored = [block for block in blocks if block.anchored]
        self._starts = [block.start for block in blocks if not block.anchored]
        self._held = ""  # outside blocks: a possible start of a marker
        self._block: Block | None = None
        self._payload = ""
        self._scan_from = 0
        self._ws = ""  # trailing whitespace of the content so far
        self._after_call = False
        self._at_start = True
        self._out: list[Segment] = []

    def feed(self, text: str) -> list[Segment]:
        while text:
            text = self._outside(text) if self._block is None else self._inside(text)
        return self._take()

    def finish(self) -> list[Segment]:
        if self._block is not None:
            self._close(self._payload, "")
        elif self._held:
            self._content(self._held)
            self._held = ""
        if self._ws and not self._after_call:
            self._out.append(content(self._ws))
        self._ws = ""
        return self._take()

    def _take(self) -> list[Segment]:
        out, self._out = self._out, []
        return out

    # ---- outside a block ----------------------------------------------------------------------------

    def _outside(self, text: str) -> str:
        """Emit content up to the next start marker; returns the text after it (or "" when none)."""
        buf = self._held + text
        self._held = ""
        if self._at_start and self._anchored:
            stripped = buf.lstrip()
            for block in self._anchored:
                if stripped.startswith(block.start):
                    self._content(buf[: len(buf) - len(stripped)])
                    return self._open(block, stripped[len(block.start):])
                if block.start.startswith(stripped):
                    self._held = buf
                    return ""
        index, marker = find_first(buf, self._starts)
        if index >= 0:
            self._content(buf[:index])
            return self._open(self._blocks[marker], buf[index + len(marker):])
        keep = partial_suffix(buf, self._starts)
        self._content(buf[: len(buf) - keep])
        self._held = buf[len(buf) - keep:]
        return ""

    def _open(self, block: Block, rest: str) -> str:
        self._block = block
        self._payload = block.start if block.keep_start else ""
        self._scan_from = len(self._payload)
        return rest

    # ---- inside a block -----------------------------------------------------------------------------

    def _inside(self, text: str) -> str:
        """Buffer until the block closes; returns the text after it."""
        block = self._block
        assert block is not None
        payload = self._payload + text
        end = block.end if block.end is not None else (None if block.anchored else block.start)
        if end is None:
            self._payload = payload
            return ""
        index = payload.find(end, self._scan_from)
        if index < 0:
            self._payload = payload
            self._scan_from = max(self._scan_from, len(payload) - len(end) + 1)
            return ""
        if block.end is None:  # the next block of the same kind starts here
            self._close(payload[:index], "")
            return payload[index:]
        self._close(payload[:index], end)
        return payload[index + len(end):]

    def _close(self, payload: str, end: str) -> None:
        block = self._block
        assert block is not None
        self._block, self._payload, self._scan_from = None, "", 0
        segments = block.parse(payload)
        if segments is None:
            self._content(payload if block.keep_start else block.start + payload + end)
            return
        for segment in segments:
            if segment.kind == TOOL_CALL:
                assert segment.call is not None
                self._call(segment.call)
            else:
                self._content(segment.text)

    # ---- emission -----------------------------------------------------------------------------------

    def _content(self, text: str) -> None:
        if not text:
            return
        text = self._ws + text
        body = text.rstrip()
        self._ws = text[len(body):]
        if not body:
            return
        if self._after_call:
            body = body.lstrip()
            self._after_call = False
        self._at_start = False
        self._out.append(content(body))

    def _call(self, call: ToolCall) -> None:
        self._ws = ""
        self._after_call = True
        self._at_start = False
        self._out.append(tool(call))
