"""Scripted answers for the mock engine, so that tool calls and reasoning can be tested end to end.

A script is a JSON file given to the mocker with ``--script`` (never part of the HTTP API): a list of rules
``{"match": "...", "output": "..."}``. For each request the prompt is decoded (special tokens kept) and the
first rule whose ``match`` occurs in it gives the answer; an empty ``match`` matches every prompt. The output
text, with whatever tool-call or reasoning markup the test wants, is tokenized with the served model's
tokenizer and generated token by token through the normal path (timing, KV cache, ``max_tokens``); when it
is used up the request finishes with ``stop``. A prompt no rule matches gets the corpus text as usual. A rule
with ``fail_after_tokens`` N fails the request after N tokens with a retryable engine error (as an engine that
died would), so that migration to another worker can be tested.

The reasoning budget (``max_thinking_tokens``) is honoured as an engine would: once the reasoning (the
tokens between ``<think>``, or the start, and ``</think>``) has used the budget, generation jumps to
``</think>``. This needs ``<think>`` and ``</think>`` to be single tokens of the model.
"""

from __future__ import annotations

import msgspec
from tokenizers import Tokenizer


class Rule(msgspec.Struct, forbid_unknown_fields=True):
    """When ``match`` is in the prompt, answer ``output``."""

    match: str
    output: str
    fail_after_tokens: int = -1  # >= 0: a retryable engine error after this many tokens


class ScriptedOutput:
    """The token ids of one answer and where its reasoning is (``think_end`` < 0: none)."""

    __slots__ = ("token_ids", "think_start", "think_end", "fail_after")

    def __init__(self, token_ids: list[int], think_start: int, think_end: int, fail_after: int = -1) -> None:
        self.token_ids = token_ids
        self.think_start = think_start
        self.think_end = think_end
        self.fail_after = fail_after

    def next_position(self, position: int, budget: int | None) -> int:
        """``position``, or the end of the reasoning when it is inside it and the budget is spent."""
        if budget is not None and self.think_start <= position < self.think_end \
                and position - self.think_start >= budget:
            return self.think_end
        return position


class Script:
    """Rules in order, with their outputs tokenized once."""

    def __init__(self, rules: list[Rule], tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.rules = rules
        self._outputs = [self._tokenize(rule.output, rule.fail_after_tokens) for rule in rules]

    @classmethod
    def from_file(cls, path: str, tokenizer: Tokenizer) -> "Script":
        """Load a script; a missing or malformed file raises ValueError naming it."""
        try:
            with open(path, "rb") as handle:
                rules = msgspec.json.decode(handle.read(), type=list[Rule])
        except (OSError, msgspec.DecodeError) as exc:
            raise ValueError(f"cannot load the mock script {path}: {exc}") from None
        return cls(rules, tokenizer)

    def output_for(self, prompt_ids: list[int]) -> ScriptedOutput | None:
        """The answer of the first matching rule, or None."""
        prompt = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        for rule, output in zip(self.rules, self._outputs):
            if rule.match in prompt:
                return output
        return None

    def _tokenize(self, text: str, fail_after: int) -> ScriptedOutput:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        start_id, end_id = self.tokenizer.token_to_id("<think>"), self.tokenizer.token_to_id("</think>")
        end = ids.index(end_id) if end_id is not None and end_id in ids else -1
        start = 0
        if end >= 0 and start_id is not None and start_id in ids[:end]:
            start = ids.index(start_id) + 1
        return ScriptedOutput(ids, start, end, fail_after)
