"""Reasoning between a start and an end marker: ``deepseek_r1``, ``qwen3`` (``<think>…</think>``), ``granite``.

Where the output starts (reasoning or content) comes from, in order: ``enable_thinking: false`` (content);
the end of the prompt, when the template opened (reasoning) or closed (content) a thinking block there; the
parser's default (``deepseek_r1`` is in reasoning from the first token, the others in content). A start
marker at the very beginning of the output is always recognised and dropped. Reasoning runs to the first end
marker (to the end of the output when there is none); whitespace around the reasoning and at the start of the
content after it is dropped. Everything after the reasoning is content, passed through unchanged.
"""

from __future__ import annotations

from .base import Segment, content, find_first, partial_suffix, reasoning
from .context import ParserContext

UNDECIDED, REASONING, CONTENT = 0, 1, 2


class ThinkParser:
    """Splits reasoning from content; see the module docstring."""

    def __init__(self, starts: tuple[str, ...], ends: tuple[str, ...], reasoning_first: bool) -> None:
        self._starts = starts
        self._ends = ends
        self._default = REASONING if reasoning_first else CONTENT
        self._state = UNDECIDED
        self._held = ""  # undecided: the beginning; reasoning: a possible start of an end marker
        self._ws = ""  # trailing whitespace of the reasoning so far
        self._lead = True  # drop whitespace at the start of the current part

    def feed(self, text: str) -> list[Segment]:
        out: list[Segment] = []
        if self._state == CONTENT:
            self._content(text, out)
            return out
        text = self._held + text
        self._held = ""
        if self._state == UNDECIDED:
            text = self._decide(text)
        if self._state == REASONING and text:
            self._reason(text, out)
        elif self._state == CONTENT and text:
            self._content(text, out)
        return out

    def finish(self) -> list[Segment]:
        held, self._held = self._held, ""
        if self._state == CONTENT or (self._state == UNDECIDED and self._default == CONTENT):
            return [content(held)] if held else []
        text, self._ws = self._ws + held, ""
        text = text.strip() if self._lead else text.rstrip()
        return [reasoning(text)] if text else []

    def _decide(self, text: str) -> str:
        """Look for a start marker at the beginning; returns the text left to process."""
        stripped = text.lstrip()
        for start in self._starts:
            if stripped.startswith(start):
                self._state = REASONING
                return stripped[len(start):]
        if any(start.startswith(stripped) for start in self._starts):
            self._held = text
            return ""
        self._state = self._default
        self._lead = self._default == REASONING
        return text

    def _reason(self, text: str, out: list[Segment]) -> None:
        index, marker = find_first(text, self._ends)
        if index >= 0:
            self._emit_reasoning(text[:index], out, final=True)
            self._state, self._lead = CONTENT, True
            self._content(text[index + len(marker):], out)
            return
        keep = partial_suffix(text, self._ends)
        self._held = text[len(text) - keep:]
        self._emit_reasoning(text[: len(text) - keep], out, final=False)

    def _emit_reasoning(self, text: str, out: list[Segment], final: bool) -> None:
        if self._lead:
            text = text.lstrip()
            if not text:
                return
            self._lead = False
        text = self._ws + text
        body = text.rstrip()
        self._ws = "" if final else text[len(body):]
        if body:
            out.append(reasoning(body))

    def _content(self, text: str, out: list[Segment]) -> None:
        if self._lead:
            text = text.lstrip()
            if not text:
                return
            self._lead = False
        out.append(content(text))


def starts_in_reasoning(context: ParserContext, start: str, end: str, default: bool) -> bool:
    """Whether the output begins inside a reasoning block (see the module docstring)."""
    if context.enable_thinking is False:
        return False
    opened, closed = context.prompt_tail.rfind(start), context.prompt_tail.rfind(end)
    if opened > closed:
        return True
    if closed >= 0:
        return False
    return default


def make_deepseek_r1(context: ParserContext) -> ThinkParser:
    return ThinkParser(("<think>",), ("</think>",), starts_in_reasoning(context, "<think>", "</think>", True))


def make_qwen3(context: ParserContext) -> ThinkParser:
    return ThinkParser(("<think>",), ("</think>",), starts_in_reasoning(context, "<think>", "</think>", False))


def make_granite(context: ParserContext) -> ThinkParser:
    return ThinkParser(("Here's my thought process:", "Here is my thought process:"),
                       ("Here's my response:", "Here is my response:"), False)
