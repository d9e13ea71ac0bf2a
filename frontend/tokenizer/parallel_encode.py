"""Long prompts tokenized on several cores: the text cut where no token can cross, the pieces encoded in one batch
call (the tokenizers library runs a batch on its thread pool), the ids put together.

A cut is placed only right before a space that follows a letter and precedes one (``...x| y...``). For the
byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, DeepSeek) the pre-tokenizer's pattern always ends a word at such
a space and starts the next word with it (`` ?\\p{L}+``), and BPE never merges across words, so the pieces encode to
exactly the ids of the whole. Other tokenizers may not (a normalizer or a pre-tokenizer that sees the start of a
text, an added token with a space in it), so :func:`parallel_encoder` tries the cut on a sample text when a model
is loaded and returns None (one call for the whole text) unless the ids come out the same.
"""

from __future__ import annotations

from typing import Callable

from tokenizers import Tokenizer

PARALLEL_MIN_CHARS = 16384
"""Shorter texts are encoded in one call: below this the thread hand-offs cost more than they save."""
PIECE_CHARS = 8192

_SAMPLE_WORDS = ("the lighthouse keeper walked along the rocky shore at dawn, counting gulls and waves; while "
                 "the old radio crackled (weather reports from distant harbors) she wrote: 'it's 42 degrees!' "
                 "naïve café déjà vu 日本語 テキスト Привет мир\n\n\t").split(" ")


def cut_points(text: str, piece_chars: int = PIECE_CHARS) -> list[int]:
    """Offsets where ``text`` may be cut, about ``piece_chars`` apart (none for a text under 1.5 pieces)."""
    cuts, start, end = [], 0, len(text)
    while end - start > piece_chars * 3 // 2:
        cut = text.find(" ", start + piece_chars)
        while cut != -1 and not (text[cut - 1].isalpha() and cut + 1 < end and text[cut + 1].isalpha()):
            cut = text.find(" ", cut + 1)
        if cut == -1:
            break
        cuts.append(cut)
        start = cut
    return cuts


def encode_in_pieces(tokenizer: Tokenizer, text: str, piece_chars: int = PIECE_CHARS) -> list[int]:
    """The ids of ``text`` (no special tokens added), its pieces encoded in one batch call."""
    bounds = [0, *cut_points(text, piece_chars), len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    ids: list[int] = []
    for encoding in tokenizer.encode_batch_fast(pieces, add_special_tokens=False):
        ids += encoding.ids
    return ids


def parallel_encoder(tokenizer: Tokenizer) -> Callable[[str], list[int]] | None:
    """``encode(text)`` in pieces for this tokenizer, or None when cutting changes its ids on the sample text."""
    sample = " ".join(_SAMPLE_WORDS[i % len(_SAMPLE_WORDS)] + (str(i) if i % 7 == 0 else "") for i in range(6000))
    whole = tokenizer.encode_batch_fast([sample], add_special_tokens=False)[0].ids
    if encode_in_pieces(tokenizer, sample, 997) != whole:
        return None
    return lambda text: encode_in_pieces(tokenizer, text)
