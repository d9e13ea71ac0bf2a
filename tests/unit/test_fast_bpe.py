"""tiktoken encodes byte-level BPE prompts with exactly the tokenizers library's ids, or is not used at all."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from bench.qwen_tokenizer import write_model_dir

from frontend.tokenizer.fast_bpe import byte_alphabet, fast_encoder
from frontend.tokenizer.tokenization import LoadedModel

ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = ROOT / "config" / "models" / "tiny"
CORPUS = (ROOT / "frontend" / "engines" / "mocker" / "corpus.txt").read_text()
WORDS = ["the", "keeper's", "naïve", "日本語", "42", "x1y", "<|im_end|>", "<|im_start|>", "(a,", "b);", "\n\n", "\t",
         " ", "'s", "Привет", "🙂", "e\u0301", "A\u030a", "\u212b", "don't", "  ", "a.b", "\u0338", "ﬁ", "①", "\r\n",
         "\u00a0", "\u3000", "ΑΒΓ", "ǅ", "한국어", "\u1100\u1161"]


def whole(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return Tokenizer.from_file(str(TINY_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    """A Qwen2.5 tokenizer (NFC, a Split regex then ByteLevel, tiktoken-derived merges), built offline."""
    return write_model_dir(tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="module")
def qwen(qwen_dir) -> Tokenizer:
    return Tokenizer.from_file(str(qwen_dir / "tokenizer.json"))


def test_the_bundled_tokenizer_is_encoded_by_tiktoken(tiny):
    encode = fast_encoder(tiny)
    assert encode is not None
    assert encode(CORPUS) == whole(tiny, CORPUS) and len(whole(tiny, CORPUS)) > 5000
    chat = "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n"
    assert encode(chat) == whole(tiny, chat) and encode("") == []


def test_a_qwen_tokenizer_is_encoded_by_tiktoken_with_nfc_between_added_tokens(qwen):
    encode = fast_encoder(qwen)
    assert encode is not None
    for text in (CORPUS, "Hello, world!", "cafe\u0301 \u212b \u212a ﬁ ①", "<|im_end|>\u0338 ≯ >\u0338",
                 "<|im_start|>user\nnaïve e\u0301<|im_end|>\n", "日本語\u3000テキスト\r\n\r\n"):
        assert encode(text) == whole(qwen, text), text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=60), st.sampled_from(["", " ", "\n"]))
def test_joined_words_encode_alike(tiny, qwen, words, separator):
    text = separator.join(words)
    assert fast_encoder_of(tiny)(text) == whole(tiny, text)
    assert fast_encoder_of(qwen)(text) == whole(qwen, text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_encodes_alike(tiny, qwen, text):
    assert fast_encoder_of(tiny)(text) == whole(tiny, text)
    assert fast_encoder_of(qwen)(text) == whole(qwen, text)


_ENCODERS: dict[int, object] = {}


def fast_encoder_of(tokenizer: Tokenizer):
    """One encoder per tokenizer for the property tests (building one takes up to a second)."""
    if id(tokenizer) not in _ENCODERS:
        _ENCODERS[id(tokenizer)] = fast_encoder(tokenizer)
    return _ENCODERS[id(tokenizer)]


def byte_level_bpe(merges: list[tuple[str, str]], **bpe) -> Tokenizer:
    """A byte-level BPE: the 256 bytes (ids 0-255), then each merge's token in order."""
    vocab = {char: byte for byte, char in byte_alphabet().items()}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, **bpe))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def test_a_small_byte_level_bpe_is_taken():
    tokenizer = byte_level_bpe([("t", "h"), ("th", "e"), ("Ġ", "the")])
    encode = fast_encoder(tokenizer)
    assert encode is not None and encode("the then") == whole(tokenizer, "the then")


def test_a_tokenizer_whose_merges_tiktoken_would_take_differently_is_left_to_tokenizers():
    """Its merges are in id order, but the entry "abc" comes from "a" + "bc", which the tokenizers library never
    forms from the word "abc" ("a" + "b" merges first, and "ab" + "c" is no merge); tiktoken would take the
    whole word as the entry."""
    tokenizer = byte_level_bpe([("a", "b"), ("b", "c"), ("a", "bc")])
    ab, abc = 256, 258
    assert whole(tokenizer, "abc") == [ab, tokenizer.token_to_id("c")] and abc == tokenizer.token_to_id("abc")
    assert fast_encoder(tokenizer) is None
    # with ignore_merges the word "abc" is the entry, but "abcx" still differs (tiktoken merges "ab" + "c" by the
    # entry "abc"); only the load-time comparison sees that
    tokenizer = byte_level_bpe([("a", "b"), ("b", "c"), ("a", "bc")], ignore_merges=True)
    assert whole(tokenizer, "abc") == [abc] and whole(tokenizer, "abcx") == [ab, tokenizer.token_to_id("c"),
                                                                            tokenizer.token_to_id("x")]
    assert fast_encoder(tokenizer) is None


@pytest.mark.parametrize("change", ["lowercase", "lstrip", "prefix", "unk", "prefix_space", "merge_order",
                                    "wordlevel", "metaspace"])
def test_other_structures_are_left_to_tokenizers(change):
    tokenizer = byte_level_bpe([("t", "h"), ("th", "e")], **({"unk_token": "t"} if change == "unk" else {}))
    if change == "lowercase":
        tokenizer.normalizer = normalizers.Lowercase()
    elif change == "lstrip":
        tokenizer.add_special_tokens([AddedToken("<s>", lstrip=True)])
    elif change == "prefix":
        tokenizer.add_special_tokens(["<s>", "<s>x"])
    elif change == "prefix_space":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    elif change == "merge_order":
        spec = json.loads(tokenizer.to_str())
        spec["model"]["merges"].reverse()
        tokenizer = Tokenizer.from_str(json.dumps(spec))
    elif change == "wordlevel":
        tokenizer = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    elif change == "metaspace":
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    assert fast_encoder(tokenizer) is None


def test_a_model_that_adds_special_tokens_keeps_them(tmp_path, tiny):
    """A post-processor that adds a BOS: completions asking for special tokens get it (the tokenizers library
    encodes them); chat prompts, which do not, still go to tiktoken."""
    shutil.copytree(TINY_DIR, tmp_path / "model")
    with_bos = Tokenizer.from_file(str(TINY_DIR / "tokenizer.json"))
    bos = with_bos.token_to_id("<|im_start|>")
    with_bos.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[
        ("<|im_start|>", bos)])
    with_bos.save(str(tmp_path / "model" / "tokenizer.json"))
    model = LoadedModel(str(tmp_path / "model"), release_gil=False)
    assert model.fast_encode is not None and model.adds_special_tokens
    ids = model.completion_prompt_ids(b'{"prompt": "Hello there"}')
    assert ids == [bos, *whole(tiny, "Hello there")]
    assert model.completion_prompt_ids(b'{"prompt": "Hello there", "add_special_tokens": false}') == \
        whole(tiny, "Hello there")


@pytest.mark.parametrize("release_gil", [False, True])
def test_loaded_models_give_the_same_ids_with_and_without_it(qwen_dir, release_gil):
    fast = LoadedModel(str(qwen_dir), release_gil=release_gil)
    slow = LoadedModel(str(qwen_dir), release_gil=release_gil, fast_bpe=False)
    assert fast.fast_encode is not None and slow.fast_encode is None
    rng = random.Random(7)
    for _ in range(20):
        content = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3000)))
        chat = json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": content}]}).encode()
        assert fast.chat_prompt_ids(chat) == slow.chat_prompt_ids(chat)
        prompt = json.dumps({"prompt": content}).encode()
        assert fast.completion_prompt_ids(prompt) == slow.completion_prompt_ids(prompt)
