"""Unit tests for frontend.postprocess.detokenizer (incremental detokenization)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # no packaging config yet: make `frontend` importable from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from frontend.postprocess.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer, token_pieces  # noqa: E402

TINY_TOKENIZER = REPO_ROOT / "config" / "models" / "tiny" / "tokenizer.json"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "héllo wörld 日本語 🙂 naïve café Ünïcödé — “quotes” and emoji 🎉🚀👍🏽",
    "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole, filled with the ends of worms.",
    "Streaming detokenization must never split a UTF-8 character between two deltas.",
    "def foo(x):\n    return x * 2  # comment\n",
    "Привет, мир! Ελληνικά. 中文文本测试。 한국어 텍스트.",
]

TEXTS = [
    "Hello world, this is plain ASCII text.",
    "héllo wörld 日本語 🙂",
    "🙂🎉🚀👍🏽 emoji only 🙂🙂",
    "Привет, мир! 中文文本测试。 한국어",
    "tabs\tand\nnew lines\n\n  indented",
    " leading space and trailing space ",
    "日本語日本語日本語日本語",
]


def _byte_level_bpe() -> Tokenizer:
    """A tiny byte-level BPE (GPT-2 style): its tokens often split multi-byte characters."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _byte_fallback_sp() -> Tokenizer:
    """A SentencePiece-style (Llama) tokenizer: '▁' for spaces, <0xNN> byte fallback, leading space stripped."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece in "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\t\n":
        vocab.setdefault(piece, len(vocab))
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "w")]
    merges += [("o", "r"), ("▁w", "or"), ("l", "d"), ("▁wor", "ld")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<s>", "</s>"])
    return tok


@pytest.fixture(scope="module")
def bpe_tok() -> Tokenizer:
    return _byte_level_bpe()


@pytest.fixture(scope="module")
def sp_tok() -> Tokenizer:
    return _byte_fallback_sp()


@pytest.fixture(scope="module")
def tiny_tok() -> Tokenizer:
    if not TINY_TOKENIZER.exists():
        pytest.skip(f"{TINY_TOKENIZER} not present")
    return Tokenizer.from_file(str(TINY_TOKENIZER))


@pytest.fixture(params=["bpe_tok", "sp_tok", "tiny_tok"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    return request.getfixturevalue(request.param)


def _batches(ids: list[int], rng: random.Random | None) -> list[list[int]]:
    """Split ids one at a time (rng None) or into random batch sizes 1..9 (including empty steps)."""
    if rng is None:
        return [[i] for i in ids]
    out, pos = [], 0
    while pos < len(ids):
        n = rng.randint(0, 9)
        out.append(ids[pos : pos + n])
        pos += n
    return out


def _stream(tok: Tokenizer, ids: list[int], rng: random.Random | None = None, **kw: object) -> list[str]:
    """All deltas of step() calls over the batches, then flush()."""
    det = IncrementalDetokenizer(tok, **kw)
    deltas = [det.step(batch) for batch in _batches(ids, rng)]
    deltas.append(det.flush())
    return deltas


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_stream_concatenates_to_full_decode(tok: Tokenizer, text: str, seed: int | None) -> None:
    ids = tok.encode(text, add_special_tokens=False).ids
    rng = None if seed is None else random.Random(seed)
    deltas = _stream(tok, ids, rng)
    assert "".join(deltas) == tok.decode(ids)
    assert not any(REPLACEMENT_CHAR in d for d in deltas)


def test_emoji_split_over_byte_tokens_is_emitted_whole(bpe_tok: Tokenizer) -> None:
    ids = bpe_tok.encode("🙂", add_special_tokens=False).ids
    assert len(ids) > 1, "test needs an emoji that spans several tokens"
    det = IncrementalDetokenizer(bpe_tok)
    deltas = [det.step([i]) for i in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1)
    assert deltas[-1] == "🙂"
    assert det.flush() == ""


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("seed", [None, 3, 4])
def test_special_tokens(bpe_tok: Tokenizer, skip: bool, seed: int | None) -> None:
    special = [bpe_tok.token_to_id(s) for s in SPECIALS]
    ids = special[1:2] + bpe_tok.encode("héllo 日本語", add_special_tokens=False).ids
    ids += special[2:3] + special[:1]
    ids += bpe_tok.encode(" 🙂 bye", add_special_tokens=False).ids + special[:1]
    rng = None if seed is None else random.Random(seed)
    deltas = _stream(bpe_tok, ids, rng, skip_special_tokens=skip)
    full = "".join(deltas)
    assert full == bpe_tok.decode(ids, skip_special_tokens=skip)
    assert ("<|endoftext|>" in full) is not skip
    assert not any(REPLACEMENT_CHAR in d for d in deltas)


def test_special_tokens_sentencepiece(sp_tok: Tokenizer) -> None:
    ids = [1] + sp_tok.encode("the world 日本", add_special_tokens=False).ids + [2]
    for skip in (True, False):
        expected = sp_tok.decode(ids, skip_special_tokens=skip)
        assert "".join(_stream(sp_tok, ids, skip_special_tokens=skip)) == expected


def test_batch_ending_inside_a_character_emits_the_complete_part(bpe_tok: Tokenizer) -> None:
    ids = bpe_tok.encode("ok 日本語", add_special_tokens=False).ids
    cut = next(n for n in range(len(ids), 0, -1) if bpe_tok.decode(ids[:n]).endswith(REPLACEMENT_CHAR))
    det = IncrementalDetokenizer(bpe_tok)
    first = det.step(ids[:cut])
    assert first == bpe_tok.decode(ids[:cut]).rstrip(REPLACEMENT_CHAR)
    assert first + det.step(ids[cut:]) + det.flush() == "ok 日本語"


def test_invalid_utf8_is_replaced_like_decode(bpe_tok: Tokenizer) -> None:
    emoji = bpe_tok.encode("🙂", add_special_tokens=False).ids
    hello = bpe_tok.encode("hi ", add_special_tokens=False).ids
    ids = hello + emoji[1:] + hello + emoji[:-1] + hello + emoji
    for seed in (None, 5, 6):
        rng = None if seed is None else random.Random(seed)
        assert "".join(_stream(bpe_tok, ids, rng)) == bpe_tok.decode(ids)


def test_flush_releases_incomplete_character_as_replacement(bpe_tok: Tokenizer) -> None:
    ids = bpe_tok.encode("ab 🙂", add_special_tokens=False).ids[:-1]
    det = IncrementalDetokenizer(bpe_tok)
    out = "".join(det.step([i]) for i in ids)
    tail = det.flush()
    assert tail.endswith(REPLACEMENT_CHAR)
    assert out + tail == bpe_tok.decode(ids)
    assert det.flush() == ""


def test_empty_step_returns_empty(bpe_tok: Tokenizer) -> None:
    det = IncrementalDetokenizer(bpe_tok)
    assert det.step([]) == ""
    assert det.flush() == ""


def test_window_stays_bounded_on_long_streams(tok: Tokenizer) -> None:
    ids = tok.encode(" ".join(TEXTS) * 40, add_special_tokens=False).ids
    assert len(ids) > 2000
    det = IncrementalDetokenizer(tok)
    out, longest = [], 0
    for batch in _batches(ids, random.Random(7)):
        out.append(det.step(batch))
        longest = max(longest, len(det._ids))
    out.append(det.flush())
    assert "".join(out) == tok.decode(ids)
    assert longest <= 100, "the window must hold ids since the last clean boundary only"


def test_long_run_of_steps_inside_characters_is_not_cut(sp_tok: Tokenizer) -> None:
    # Byte-fallback tokens of 3-byte characters, batches that always end inside a character.
    ids = sp_tok.encode("日本語" * 40, add_special_tokens=False).ids
    assert len(ids) == 1 + 360  # '▁' then one <0xNN> token per byte
    sizes = [2] + [3] * 60
    det = IncrementalDetokenizer(sp_tok)
    deltas, pos = [], 0
    for n in sizes:
        deltas.append(det.step(ids[pos : pos + n]))
        pos += n
    assert deltas[1:] == [""] * 60  # nothing is complete yet, and nothing was forced out
    deltas.append(det.step(ids[pos:]))
    deltas.append(det.flush())
    assert "".join(deltas) == "日本語" * 40


def test_window_stays_bounded_on_endless_invalid_bytes(bpe_tok: Tokenizer) -> None:
    # A lone UTF-8 continuation byte: every prefix of this stream decodes with a trailing U+FFFD.
    cont = bpe_tok.encode("🙂", add_special_tokens=False).ids[-1]
    assert bpe_tok.decode([cont]) == REPLACEMENT_CHAR
    ids = [cont] * 1000
    for size in (1, 8):
        det = IncrementalDetokenizer(bpe_tok)
        out, longest = [], 0
        for pos in range(0, len(ids), size):
            out.append(det.step(ids[pos : pos + size]))
            longest = max(longest, len(det._ids))
        out.append(det.flush())
        assert longest <= 64 * size + size
        assert "".join(out) == bpe_tok.decode(ids)


def test_prompt_tail_keeps_leading_space_of_first_token(sp_tok: Tokenizer) -> None:
    prompt = sp_tok.encode("the", add_special_tokens=False).ids
    gen = sp_tok.encode("the world", add_special_tokens=False).ids[len(prompt) :]
    assert sp_tok.decode(gen) == "world"  # decoded alone, SentencePiece drops the leading space
    assert "".join(_stream(sp_tok, gen)) == "world"
    with_tail = _stream(sp_tok, gen, prompt_tail=[1] + prompt)
    assert "".join(with_tail) == " world"


@pytest.mark.parametrize("seed", [None, 8])
def test_prompt_tail_byte_level(tok: Tokenizer, seed: int | None) -> None:
    prompt = tok.encode("Some prompt text that is long enough", add_special_tokens=False).ids
    gen = tok.encode(" and the answer 日本語 🙂", add_special_tokens=False).ids
    rng = None if seed is None else random.Random(seed)
    full = tok.decode(prompt + gen)
    assert "".join(_stream(tok, gen, rng, prompt_tail=prompt)) == full[len(tok.decode(prompt)) :]


def test_prompt_tail_ending_inside_a_character_is_ignored(bpe_tok: Tokenizer) -> None:
    emoji = bpe_tok.encode("🙂", add_special_tokens=False).ids
    prompt = bpe_tok.encode("hi ", add_special_tokens=False).ids + emoji[:1]
    gen = emoji[1:] + bpe_tok.encode(" ok", add_special_tokens=False).ids
    assert "".join(_stream(bpe_tok, gen, prompt_tail=prompt)) == bpe_tok.decode(gen)


def test_prompt_tail_is_not_mutated(bpe_tok: Tokenizer) -> None:
    prompt = bpe_tok.encode("a b c d e f g", add_special_tokens=False).ids
    before = list(prompt)
    det = IncrementalDetokenizer(bpe_tok, prompt_tail=prompt)
    det.step(bpe_tok.encode(" h", add_special_tokens=False).ids)
    assert prompt == before


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_piece_table_path_gives_the_same_deltas_as_decoding(tiny_tok: Tokenizer, data) -> None:
    """Byte-level tokenizers take the cached-pieces path at clean boundaries: any ids (partial characters, special
    tokens, invalid byte runs included) in any batches give exactly the deltas of the decode-only path."""
    vocab = tiny_tok.get_vocab_size()
    ids = data.draw(st.lists(st.integers(0, vocab - 1) | st.integers(0, 300), max_size=40))
    seed = data.draw(st.integers(0, 1000))
    skip = data.draw(st.booleans())
    fast = IncrementalDetokenizer(tiny_tok, skip_special_tokens=skip, prompt_tail=[9707, 11])
    plain = IncrementalDetokenizer(tiny_tok, skip_special_tokens=skip, prompt_tail=[9707, 11])
    plain._pieces = None
    assert fast._pieces is not None
    batches = _batches(ids, random.Random(seed))
    assert [fast.step(b) for b in batches] + [fast.flush()] == [plain.step(b) for b in batches] + [plain.flush()]


def test_piece_table_only_for_byte_level_decoders(bpe_tok: Tokenizer, sp_tok: Tokenizer) -> None:
    assert token_pieces(bpe_tok, True) is token_pieces(bpe_tok, True)
    assert token_pieces(sp_tok, True) is None
