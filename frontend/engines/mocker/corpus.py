"""The text the mock engine "generates": a prose corpus tokenized with the served model's tokenizer."""

from __future__ import annotations

import os
from array import array

from tokenizers import Tokenizer

CORPUS_PATH = os.path.join(os.path.dirname(__file__), "corpus.txt")


class Corpus:
    """Token ids of every paragraph, back to back, with the index where each paragraph starts and ends."""

    def __init__(self, tokenizer: Tokenizer, text: str | None = None) -> None:
        if text is None:
            with open(CORPUS_PATH, encoding="utf-8") as handle:
                text = handle.read()
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        if not paragraphs:
            raise ValueError("the mock corpus is empty")
        self.tokens = array("I")
        self.starts: list[int] = []
        self.ends = bytearray()
        for encoding in tokenizer.encode_batch([p + "\n\n" for p in paragraphs], add_special_tokens=False):
            self.starts.append(len(self.tokens))
            self.tokens.extend(encoding.ids)
            self.ends.extend(b"\0" * (len(encoding.ids) - 1) + b"\1")
        self.vocab_size = tokenizer.get_vocab_size()
        self.tokenizer = tokenizer  # also tokenizes guided (structured) output

    @property
    def paragraph_count(self) -> int:
        return len(self.starts)

    def paragraph_start(self, index: int) -> int:
        return self.starts[index]

    def token_at(self, position: int) -> tuple[int, bool]:
        """The token at ``position`` (wrapping around) and whether it ends its paragraph."""
        position %= len(self.tokens)
        return self.tokens[position], bool(self.ends[position])
