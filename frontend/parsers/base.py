"""What every output parser shares: the segment types, the parser protocol and small text helpers.

A parser turns model text into an ordered list of :class:`Segment`s: content, reasoning or a complete tool
call. It is fed the text as it streams (``feed``) and told when the stream ends (``finish``); whatever it
cannot decide yet it holds back, so feeding a text whole or split at any boundary yields the same segments
once adjacent segments of the same kind are merged (the property the tests check at every byte boundary).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Iterable, Protocol

import msgspec

CONTENT = 0
REASONING = 1
TOOL_CALL = 2


class ToolCall(msgspec.Struct):
    """One parsed function call; ``arguments`` is always a JSON object text. ``id`` is assigned on emission."""

    name: str
    arguments: str
    id: str = ""


class Segment(msgspec.Struct, gc=False):
    """A piece of parsed output: content or reasoning text, or a tool call."""

    kind: int
    text: str = ""
    call: ToolCall | None = None


class OutputParser(Protocol):
    """Streams text in, segments out; ``finish`` releases everything still held."""

    def feed(self, text: str) -> list[Segment]: ...

    def finish(self) -> list[Segment]: ...


def content(text: str) -> Segment:
    return Segment(CONTENT, text)


def reasoning(text: str) -> Segment:
    return Segment(REASONING, text)


def tool(call: ToolCall) -> Segment:
    return Segment(TOOL_CALL, "", call)


def merge(segments: Iterable[Segment]) -> list[Segment]:
    """Adjacent content (or reasoning) segments joined, empty text segments dropped."""
    merged: list[Segment] = []
    for segment in segments:
        if segment.kind != TOOL_CALL:
            if not segment.text:
                continue
            if merged and merged[-1].kind == segment.kind:
                merged[-1] = Segment(segment.kind, merged[-1].text + segment.text)
                continue
        merged.append(segment)
    return merged


def new_call_id() -> str:
    """An OpenAI-style tool call id."""
    return "call_" + secrets.token_hex(12)


def partial_suffix(text: str, markers: Iterable[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``markers`` (0 if none).

    Only positions holding a marker's first character are tried (found with ``str.find``), so text without
    that character costs one search per marker.
    """
    best = 0
    for marker in markers:
        index = text.find(marker[0], max(0, len(text) - len(marker) + 1))
        while 0 <= index and len(text) - index > best:
            if marker.startswith(text[index:]):
                best = len(text) - index
                break
            index = text.find(marker[0], index + 1)
    return best


def find_first(text: str, markers: Iterable[str], start: int = 0) -> tuple[int, str]:
    """The earliest occurrence of any marker at or after ``start``: (index, marker), or (-1, "")."""
    best, found = -1, ""
    for marker in markers:
        index = text.find(marker, start)
        if index >= 0 and (best < 0 or index < best):
            best, found = index, marker
    return best, found


def json_arguments(value: Any) -> str | None:
    """Arguments as a JSON object text: a dict, a JSON text of a dict, or None/absent (``{}``)."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: model output nested too deeply to be arguments
            return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def call_from_object(obj: Any) -> ToolCall | None:
    """A call from ``{"name": ..., "arguments"|"parameters": {...}}``; None when it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    arguments = json_arguments(obj.get("arguments", obj.get("parameters")))
    if arguments is None:
        return None
    return ToolCall(obj["name"], arguments)


INVALID = object()


def loads(text: str) -> Any:
    """``json.loads`` that returns :data:`INVALID` instead of raising (also for text nested too deeply)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return INVALID
