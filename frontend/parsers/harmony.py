"""``harmony`` (tool calls) and ``gpt_oss`` (reasoning): gpt-oss's channelled messages.

    <|channel|>analysis<|message|>Need the weather.<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Oslo"}
    <|call|>
    <|channel|>final<|message|>It is sunny.<|return|>

One parser serves both names, because channels carry both: ``analysis`` is reasoning (content when the model
has no reasoning parser), ``final`` and ``commentary`` without a recipient are content, and a message with a
recipient (``to=functions.NAME``) is a tool call when the request has tools (else its body is content).
Headers are never shown. Output without any header is content.
"""

from __future__ import annotations

import re

from .base import Segment, ToolCall, content, find_first, json_arguments, loads, partial_suffix, reasoning, tool
from .context import ParserContext

START, CHANNEL, MESSAGE = "<|start|>", "<|channel|>", "<|message|>"
TERMINATORS = ("<|end|>", "<|call|>", "<|return|>", START)
_RECIPIENT = re.compile(r"to=([^\s<]+)")
_CHANNEL = re.compile(re.escape(CHANNEL) + r"\s*([A-Za-z_]+)")

PROBE, HEADER, BODY = 0, 1, 2


class HarmonyParser:
    """Splits harmony messages into reasoning, content and tool calls; see the module docstring."""

    def __init__(self, *, reasoning_enabled: bool, tools_enabled: bool) -> None:
        self._reasoning = reasoning_enabled
        self._tools = tools_enabled
        self._state = PROBE
        self._buf = ""
        self._channel = "final"
        self._recipient = ""

    def feed(self, text: str) -> list[Segment]:
        out: list[Segment] = []
        self._buf += text
        while self._buf and self._step(out):
            pass
        return out

    def finish(self) -> list[Segment]:
        out: list[Segment] = []
        if self._state == BODY and self._buf:
            self._body_part(self._buf, out, complete=True)
        elif self._state == PROBE and self._buf:
            out.append(content(self._buf))
        self._buf = ""
        return out

    def _step(self, out: list[Segment]) -> bool:
        """Advance over the buffer once; False when it must wait for more text."""
        if self._state == PROBE:
            return self._probe()
        if self._state == HEADER:
            return self._header()
        return self._body(out)

    def _probe(self) -> bool:
        stripped = self._buf.lstrip()
        if stripped.startswith((START, CHANNEL)):
            self._state, self._buf = HEADER, stripped
            return True
        if START.startswith(stripped) or CHANNEL.startswith(stripped):
            return False
        self._state, self._channel, self._recipient = BODY, "final", ""
        return True

    def _header(self) -> bool:
        index = self._buf.find(MESSAGE)
        if index < 0:
            return False
        header, self._buf = self._buf[:index], self._buf[index + len(MESSAGE):]
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        self._channel = channel.group(1) if channel else "final"
        self._recipient = recipient.group(1) if recipient else ""
        self._state = BODY
        return True

    def _body(self, out: list[Segment]) -> bool:
        index, marker = find_first(self._buf, TERMINATORS)
        if index >= 0:
            self._body_part(self._buf[:index], out, complete=True)
            self._buf = self._buf[index + (0 if marker == START else len(marker)):]
            self._state = HEADER
            return True
        if self._is_call():
            return False  # a call's arguments are parsed whole
        keep = partial_suffix(self._buf, TERMINATORS)
        self._body_part(self._buf[: len(self._buf) - keep], out, complete=False)
        self._buf = self._buf[len(self._buf) - keep:]
        return False

    def _is_call(self) -> bool:
        return bool(self._recipient) and self._tools

    def _body_part(self, text: str, out: list[Segment], complete: bool) -> None:
        if self._is_call() and complete:
            name = self._recipient[len("functions."):] if self._recipient.startswith("functions.") else self._recipient
            arguments = json_arguments(loads(text.strip()))
            if name and arguments is not None:
                out.append(tool(ToolCall(name, arguments)))
                return
        if not text:
            return
        if self._channel == "analysis" and self._reasoning:
            out.append(reasoning(text))
        else:
            out.append(content(text))


def make_tool_parser(context: ParserContext, reasoning_enabled: bool = False) -> HarmonyParser:
    return HarmonyParser(reasoning_enabled=reasoning_enabled, tools_enabled=True)


def make_reasoning_parser(context: ParserContext, tools_enabled: bool = False) -> HarmonyParser:
    return HarmonyParser(reasoning_enabled=True, tools_enabled=tools_enabled)
