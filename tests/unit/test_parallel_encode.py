"""Long prompts encoded in pieces give exactly the ids of one encode, or the model does not cut at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers

from frontend.tokenizer.parallel_encode import cut_points, encode_in_pieces, parallel_encoder

TINY = Path(__file__).resolve().parents[2] / "config" / "models" / "tiny" / "tokenizer.json"
WORDS = ["the", "keeper's", "naïve", "日本語", "42", "x1y", "<|im_end|>", "<think>", "(a,", "b);", "\n\n", "\t", " ",
         "'s", "Привет", "🙂", "e\u0301", "don't", "  ", "a.b"]


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return Tokenizer.from_file(str(TINY))


def whole(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_cuts_fall_between_words_only():
    text = "alpha beta  gamma 12 delta, epsilon zeta " * 50
    cuts = cut_points(text, 40)
    assert cuts and all(text[c] == " " and text[c - 1].isalpha() and text[c + 1].isalpha() for c in cuts)
    assert cuts == sorted(cuts) and all(b - a >= 40 for a, b in zip(cuts, cuts[1:]))
    assert cut_points("short text", 40) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=400), st.integers(8, 64))
def test_pieces_encode_like_the_whole(tiny, words, piece_chars):
    text = " ".join(words)
    assert encode_in_pieces(tiny, text, piece_chars) == whole(tiny, text)


def test_the_bundled_tokenizer_cuts_long_prompts(tiny):
    encode = parallel_encoder(tiny)
    assert encode is not None
    text = (Path(__file__).resolve().parents[2] / "frontend" / "engines" / "mocker" / "corpus.txt").read_text()
    assert len(cut_points(text)) >= 2
    assert encode(text) == whole(tiny, text)


def test_a_tokenizer_that_sees_the_start_of_a_text_is_not_cut():
    """SentencePiece-style: the normalizer prepends "▁" to every text, so each piece would gain a word start."""
    vocab = {"<unk>": 0, "▁": 1}
    for piece in "abcdefghijklmnopqrstuvwxyz":
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Metaspace()
    assert parallel_encoder(tok) is None
