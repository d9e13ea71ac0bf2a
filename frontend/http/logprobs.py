"""Engine logprobs (token ids) to OpenAI's chat and completions logprob shapes.

Chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}],
"refusal": null}``, the alternatives as the engine ranked them (``top_logprobs`` of them). Completions:
``{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}``, where each
``top_logprobs`` entry holds the sampled token too (OpenAI: "the logprob of the sampled token is always
returned", so up to ``logprobs + 1`` entries), and ``text_offset`` counts characters of the returned text
(an echoed prompt included).

``bytes`` are the token's own bytes, not the UTF-8 of its text: a token that holds part of a multi-byte
character decodes to U+FFFD, but its bytes (from the byte-level BPE alphabet, or a ``<0xNN>`` byte-fallback
token) let a client join the pieces. Token texts and bytes are cached per tokenizer.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer

from ..protocol.engine import TokenLogprob
from ..protocol.openai import ChoiceLogprobs, CompletionLogprobs, TokenLogprobEntry, TopLogprob

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_CACHE_TOKENIZERS = 8


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars)}


_BYTE_LEVEL = _byte_level_alphabet()


class TokenTexts:
    """(text, bytes) of token ids of one tokenizer, computed once per id."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.byte_level = type(tokenizer.decoder).__name__ == "ByteLevel"
        self.added = set(tokenizer.get_added_tokens_decoder())
        self.cache: dict[int, tuple[str, list[int]]] = {}

    def get(self, token_id: int) -> tuple[str, list[int]]:
        entry = self.cache.get(token_id)
        if entry is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            entry = self.cache[token_id] = (text, self._bytes(token_id, text))
        return entry

    def _bytes(self, token_id: int, text: str) -> list[int]:
        if "\ufffd" not in text or token_id in self.added:
            return list(text.encode())
        piece = self.tokenizer.id_to_token(token_id) or ""
        if self.byte_level and all(char in _BYTE_LEVEL for char in piece):
            return [_BYTE_LEVEL[char] for char in piece]
        match = _BYTE_TOKEN.fullmatch(piece)
        if match:
            return [int(match.group(1), 16)]
        return list(text.encode())


_texts: dict[int, TokenTexts] = {}


def token_texts(tokenizer: Tokenizer) -> TokenTexts:
    texts = _texts.get(id(tokenizer))
    if texts is None or texts.tokenizer is not tokenizer:
        if len(_texts) >= _CACHE_TOKENIZERS:
            _texts.pop(next(iter(_texts)))
        texts = _texts[id(tokenizer)] = TokenTexts(tokenizer)
    return texts


def chat_logprobs(tokenizer: Tokenizer, entries: list[TokenLogprob]) -> ChoiceLogprobs:
    texts = token_texts(tokenizer)
    content = []
    for entry in entries:
        text, raw = texts.get(entry.token_id)
        top = []
        for token_id, logprob in entry.top:
            alt, alt_raw = texts.get(token_id)
            top.append(TopLogprob(alt, logprob, alt_raw))
        content.append(TokenLogprobEntry(text, entry.logprob, raw, top))
    return ChoiceLogprobs(content)


def completion_logprobs(tokenizer: Tokenizer, entries: list[TokenLogprob], text_offset: int) -> CompletionLogprobs:
    texts = token_texts(tokenizer)
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for entry in entries:
        text = texts.get(entry.token_id)[0]
        tokens.append(text)
        token_logprobs.append(entry.logprob)
        top = {texts.get(token_id)[0]: logprob for token_id, logprob in entry.top}
        top.setdefault(text, entry.logprob)  # the sampled token is always there
        top_logprobs.append(top)
        offsets.append(text_offset)
        text_offset += len(text)
    return CompletionLogprobs(tokens, token_logprobs, top_logprobs, offsets)
