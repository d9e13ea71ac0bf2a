"""Parsed output as Responses API output items, and the stream events that build them, in OpenAI's order.

One :class:`OutputBuilder` serves both answers: the unary response takes its final ``items``, the stream
sends its events. A run of reasoning is a ``reasoning`` item, a run of text a ``message`` item (one
``output_text`` part), a tool call a ``function_call`` item; an item is closed when the next kind starts.

    reasoning: output_item.added, content_part.added, reasoning_text.delta..., reasoning_text.done,
               content_part.done, output_item.done
    message:   output_item.added, content_part.added, output_text.delta..., output_text.done,
               content_part.done, output_item.done
    call:      output_item.added, function_call_arguments.delta, function_call_arguments.done, output_item.done
"""

from __future__ import annotations

import uuid
from typing import Callable

from ..parsers.base import REASONING, TOOL_CALL, Segment, ToolCall
from ..protocol import responses as rs


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputBuilder:
    """Accumulates items from segments; ``add`` and ``close`` return the events of what changed."""

    def __init__(self, sequence: Callable[[], int]) -> None:
        self._sequence = sequence
        self.items: list[rs.OutputItem] = []
        self._kind = -1  # kind of the open text item (REASONING or CONTENT), -1: none open
        self._index = 0  # its output index
        self._item_id = ""
        self._text: list[str] = []

    def add(self, segments: list[Segment]) -> list[rs.ResponseStreamEvent]:
        events: list[rs.ResponseStreamEvent] = []
        for segment in segments:
            if segment.kind == TOOL_CALL:
                assert segment.call is not None
                events += self.close("completed")
                events += self._call(segment.call)
                continue
            if segment.kind != self._kind:
                events += self.close("completed")
                events += self._open(segment.kind)
            self._text.append(segment.text)
            if self._kind == REASONING:
                events.append(self._part_event("response.reasoning_text.delta", delta=segment.text))
            else:
                events.append(self._part_event("response.output_text.delta", delta=segment.text, logprobs=[]))
        return events

    def close(self, status: str) -> list[rs.ResponseStreamEvent]:
        """Close the open text item (if any) with ``status``."""
        if self._kind < 0:
            return []
        text = "".join(self._text)
        if self._kind == REASONING:
            part: rs.OutputTextPart | rs.ReasoningTextPart = rs.ReasoningTextPart(text)
            item: rs.OutputItem = rs.ReasoningOutput(self._item_id, [part], status=status)
            done = self._part_event("response.reasoning_text.done", text=text)
        else:
            part = rs.OutputTextPart(text)
            item = rs.MessageOutput(self._item_id, status, [part])
            done = self._part_event("response.output_text.done", text=text, logprobs=[])
        events = [done, self._part_event("response.content_part.done", part=part),
                  self._item_event("response.output_item.done", item)]
        self.items.append(item)
        self._kind, self._text = -1, []
        return events

    def _open(self, kind: int) -> list[rs.ResponseStreamEvent]:
        self._kind, self._index = kind, len(self.items)
        if kind == REASONING:
            self._item_id = new_id("rs")
            item: rs.OutputItem = rs.ReasoningOutput(self._item_id, [], status="in_progress")
            part: rs.OutputTextPart | rs.ReasoningTextPart = rs.ReasoningTextPart("")
        else:
            self._item_id = new_id("msg")
            item = rs.MessageOutput(self._item_id, "in_progress", [])
            part = rs.OutputTextPart("")
        return [self._item_event("response.output_item.added", item),
                self._part_event("response.content_part.added", part=part)]

    def _call(self, call: ToolCall) -> list[rs.ResponseStreamEvent]:
        self._index, self._item_id = len(self.items), new_id("fc")
        added = rs.FunctionCallOutput(self._item_id, call.id, call.name, "", "in_progress")
        done = rs.FunctionCallOutput(self._item_id, call.id, call.name, call.arguments, "completed")
        self.items.append(done)
        return [self._item_event("response.output_item.added", added),
                self._event("response.function_call_arguments.delta", item_id=self._item_id, delta=call.arguments),
                self._event("response.function_call_arguments.done", item_id=self._item_id,
                            arguments=call.arguments, name=call.name),
                self._item_event("response.output_item.done", done)]

    def _item_event(self, kind: str, item: rs.OutputItem) -> rs.ResponseStreamEvent:
        return self._event(kind, item=item)

    def _part_event(self, kind: str, **fields) -> rs.ResponseStreamEvent:
        """An event about the open item's (only) content part."""
        return self._event(kind, item_id=self._item_id, content_index=0, **fields)

    def _event(self, kind: str, **fields) -> rs.ResponseStreamEvent:
        return rs.ResponseStreamEvent(kind, self._sequence(), output_index=self._index, **fields)
