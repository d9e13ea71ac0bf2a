"""Token-exact prompt text: a local Hugging Face tokenizer and slices of a prose corpus.

Prompts are windows of the tokenized corpus, decoded to text. Decoding and re-encoding a window can move a
token boundary at its edges, so ``PromptText.exact`` re-encodes and trims or extends until the text counts
exactly the requested number of tokens (with ``add_special_tokens=False``, as AIPerf counts).
"""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parent.parent
BUNDLED_TOKENIZER = REPO / "config" / "models" / "tiny"
QWEN_CACHE_DIR = REPO / ".cache" / "models" / "qwen2.5-tokenizer"
QWEN_ALIASES = {"qwen", "qwen2", "qwen2.5"}
DEFAULT_CORPUS = REPO / "frontend" / "engines" / "mocker" / "corpus.txt"
MAX_ADJUSTMENTS = 8


def resolve_tokenizer_dir(spec: str | None) -> Path:
    """The tokenizer directory for ``--tokenizer``: a local dir, ``qwen2.5`` (built on demand) or the bundled one."""
    if spec is None:
        return BUNDLED_TOKENIZER
    if spec.lower() in QWEN_ALIASES:
        from .qwen_tokenizer import ensure_model_dir

        return ensure_model_dir(QWEN_CACHE_DIR)
    path = Path(spec)
    if path.is_file() and path.name == "tokenizer.json":
        return path.parent
    if not (path / "tokenizer.json").is_file():
        raise ValueError(f"--tokenizer {spec}: no tokenizer.json there (a local Hugging Face model dir is needed; "
                         "no model hub is contacted)")
    return path


class TextTokenizer:
    """Counts and encodes text with a ``tokenizer.json``, never adding special tokens."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def count_many(self, texts: list[str]) -> list[int]:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]


class PromptText:
    """Makes text of an exact token length from windows of a corpus."""

    def __init__(self, tokenizer: TextTokenizer, corpus: str) -> None:
        self.tokenizer = tokenizer
        self.corpus_ids = tokenizer.encode(" ".join(corpus.split()))
        if len(self.corpus_ids) < 64:
            raise ValueError("the prompt corpus is too short (fewer than 64 tokens)")

    @classmethod
    def from_files(cls, tokenizer: TextTokenizer, corpus_path: str | None) -> PromptText:
        path = Path(corpus_path) if corpus_path else DEFAULT_CORPUS
        return cls(tokenizer, path.read_text(encoding="utf-8"))

    def window(self, start: int, length: int) -> list[int]:
        """``length`` corpus token ids from ``start``, wrapping around the corpus."""
        ids = self.corpus_ids
        start %= len(ids)
        out = ids[start:start + length]
        while len(out) < length:
            out += ids[:length - len(out)]
        return out

    def exact(self, length: int, rng: random.Random) -> str:
        """Text that encodes to exactly ``length`` tokens, from a random window of the corpus."""
        start = rng.randrange(len(self.corpus_ids))
        ids = self.window(start, length)
        for _ in range(MAX_ADJUSTMENTS):
            text = self.text_of(ids)
            encoded = self.tokenizer.encode(text)
            if len(encoded) == length:
                return text
            if len(encoded) > length:
                ids = encoded[:length]
            else:
                ids = encoded + self.window(start + len(ids), length - len(encoded))
        raise RuntimeError(f"could not make a prompt of exactly {length} tokens from the corpus")

    def text_of(self, ids: list[int]) -> str:
        """Decode, dropping a replacement character left by a window that cut a multi-byte character."""
        return self.tokenizer.decode(ids).replace("\ufffd", "")
